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
