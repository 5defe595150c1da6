"""T5 text encode: a prompt to a `CONDITIONING` in the form ComfyUI's own T5 encoders give
([embeddings, {attention_mask, ...}], see convert.py), so ComfyUI's samplers take it too."""

from __future__ import annotations

from ..ltx_core.models import text_encoder as core_text_encoder
from . import memory
from .convert import embeddings_to_conditioning
from .registry import CATEGORY, T5_TYPE


class LTXVCoreT5Encode:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Encodes a prompt with T5. Use a second node for the negative prompt. The encoder "
        "leaves the GPU when it is done."
    )
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("T5 embeddings (batch, tokens, width) and their attention mask, in ComfyUI's own form.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "t5": (T5_TYPE,),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The prompt (the negative prompt may be empty)."}),
            "max_tokens": ("INT", {"default": 128, "min": 1, "max": 1024, "tooltip": "Longer prompts are cut with a warning; LTX-Video was trained with 128."}),
        }}  # fmt: skip

    def encode(self, t5, text, max_tokens):
        with memory.on_device(t5.patcher):
            # the negative prompt may be empty; the sampler refuses an empty positive one
            embeddings = core_text_encoder.encode_prompt(t5.encoder, [text], max_tokens=max_tokens, allow_empty=True)
        return (embeddings_to_conditioning(embeddings, prompt_is_empty=not text.strip()),)
