"""`python -m ltx_core generate ...` (see `ltx_core.cli`)."""

from .cli import entry_point

entry_point()
