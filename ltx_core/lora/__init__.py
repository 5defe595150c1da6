"""LoRA for the LTX-Video transformer: `read_lora` reads the published layouts into one
form (`files`), `apply_loras` applies any number with a strength each and gives a handle
that removes them (`apply`), `save_lora` writes any layout."""

from .apply import AppliedLoRAs, LoRABranch, apply_loras
from .files import LAYOUTS, LoRAFile, LoRAWeights, lora_header, read_lora, reference_downscale_factor, save_lora

__all__ = [
    "LAYOUTS",
    "AppliedLoRAs",
    "LoRABranch",
    "LoRAFile",
    "LoRAWeights",
    "apply_loras",
    "lora_header",
    "read_lora",
    "reference_downscale_factor",
    "save_lora",
]
