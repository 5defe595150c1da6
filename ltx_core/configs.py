"""Frozen configs of every published LTX-Video version, beside tiny ones for tests.

Field names are the official checkpoint metadata's (the `config` entry of the single
`.safetensors` file), so reading a config from a file is a filter, not a translation.
Each model owner edits only its own section below.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace  # noqa: F401

# ---------------------------------------------------------------- transformer section


# ---------------------------------------------------------------- vae section


# ---------------------------------------------------------------- scheduler section


@dataclass(frozen=True)
class SchedulerConfig:
    """Flow-matching sigma schedule; field names are diffusers' `scheduler_config.json`
    of `Lightricks/LTX-Video`, which LTXPipeline drives (paper 2.5.2: the shift grows
    with the token count, so larger videos spend more steps at high noise)."""

    use_dynamic_shifting: bool = True
    base_shift: float = 0.95
    max_shift: float = 2.05
    base_image_seq_len: int = 1024
    max_image_seq_len: int = 4096
    shift_terminal: float | None = 0.1
    time_shift_type: str = "exponential"
    shift: float = 1.0  # the fixed shift, used only without dynamic shifting

    def __post_init__(self):
        if self.time_shift_type not in ("exponential", "linear"):
            raise ValueError(
                f"time_shift_type {self.time_shift_type!r} is unknown; "
                "allowed: 'exponential' or 'linear'"
            )
        if self.shift_terminal is not None and not 0.0 <= self.shift_terminal < 1.0:
            raise ValueError(f"shift_terminal {self.shift_terminal} must be in [0, 1) or None")


LTXV_SCHEDULER = SchedulerConfig()
