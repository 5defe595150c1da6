"""The pack's one node registry: every node id and display name, in graph order.

Node ids are stored in saved graphs and are forever; they carry the `LTXVCore` prefix
so they never collide with ComfyUI's own LTXV nodes (`EmptyLTXVLatentVideo`, ...).
"""

from .decode import LTXVCoreDenoisingDecode
from .guide import LTXVCoreAddGuide, LTXVCoreGuidedSampler
from .latent import LTXVCoreConditionFirstFrame, LTXVCoreEmptyLatentVideo, LTXVCoreVAEEncodeFirstFrame
from .loaders import LTXVCoreCheckpointLoader, LTXVCoreT5Loader, LTXVCoreTransformerLoader, LTXVCoreVAELoader
from .long_video import LTXVCoreLongVideoSampler
from .lora import LTXVCoreAddControl, LTXVCoreLoraLoader
from .registry import install_example_inputs, register_model_folders
from .sampling import LTXVCoreSampler, LTXVCoreScheduler
from .text import LTXVCoreT5Encode
from .upsample import LTXVCoreLatentUpsample, LTXVCoreReleaseSchedule, LTXVCoreUpsamplerLoader
from .video import LTXVCoreSaveVideo

register_model_folders()
install_example_inputs()

NODE_CLASS_MAPPINGS = {
    "LTXVCoreCheckpointLoader": LTXVCoreCheckpointLoader,
    "LTXVCoreTransformerLoader": LTXVCoreTransformerLoader,
    "LTXVCoreVAELoader": LTXVCoreVAELoader,
    "LTXVCoreT5Loader": LTXVCoreT5Loader,
    "LTXVCoreLoraLoader": LTXVCoreLoraLoader,
    "LTXVCoreUpsamplerLoader": LTXVCoreUpsamplerLoader,
    "LTXVCoreT5Encode": LTXVCoreT5Encode,
    "LTXVCoreEmptyLatentVideo": LTXVCoreEmptyLatentVideo,
    "LTXVCoreVAEEncodeFirstFrame": LTXVCoreVAEEncodeFirstFrame,
    "LTXVCoreConditionFirstFrame": LTXVCoreConditionFirstFrame,
    "LTXVCoreAddGuide": LTXVCoreAddGuide,
    "LTXVCoreAddControl": LTXVCoreAddControl,
    "LTXVCoreScheduler": LTXVCoreScheduler,
    "LTXVCoreReleaseSchedule": LTXVCoreReleaseSchedule,
    "LTXVCoreSampler": LTXVCoreSampler,
    "LTXVCoreGuidedSampler": LTXVCoreGuidedSampler,
    "LTXVCoreLongVideoSampler": LTXVCoreLongVideoSampler,
    "LTXVCoreLatentUpsample": LTXVCoreLatentUpsample,
    "LTXVCoreDenoisingDecode": LTXVCoreDenoisingDecode,
    "LTXVCoreSaveVideo": LTXVCoreSaveVideo,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LTXVCoreCheckpointLoader": "LTX-Video Checkpoint Loader",
    "LTXVCoreTransformerLoader": "LTX-Video Transformer Loader (GGUF, FP8)",
    "LTXVCoreVAELoader": "LTX-Video VAE Loader",
    "LTXVCoreT5Loader": "LTX-Video T5 Loader",
    "LTXVCoreLoraLoader": "LTX-Video LoRA Loader",
    "LTXVCoreUpsamplerLoader": "LTX-Video Latent Upsampler Loader",
    "LTXVCoreT5Encode": "LTX-Video T5 Text Encode",
    "LTXVCoreEmptyLatentVideo": "LTX-Video Empty Latent",
    "LTXVCoreVAEEncodeFirstFrame": "LTX-Video VAE Encode First Frame",
    "LTXVCoreConditionFirstFrame": "LTX-Video Condition On First Frame",
    "LTXVCoreAddGuide": "LTX-Video Add Keyframe / Guide",
    "LTXVCoreAddControl": "LTX-Video Add IC-LoRA Control",
    "LTXVCoreScheduler": "LTX-Video Flow Sigmas",
    "LTXVCoreReleaseSchedule": "LTX-Video Release Schedule",
    "LTXVCoreSampler": "LTX-Video Sampler",
    "LTXVCoreGuidedSampler": "LTX-Video Sampler (STG, Keyframes)",
    "LTXVCoreLongVideoSampler": "LTX-Video Long Video Sampler (windows, prompt segments)",
    "LTXVCoreLatentUpsample": "LTX-Video Latent Upsample",
    "LTXVCoreDenoisingDecode": "LTX-Video Denoising VAE Decode",
    "LTXVCoreSaveVideo": "LTX-Video Save MP4",
}
