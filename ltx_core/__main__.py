"""`python -m ltx_core generate ...` (see `ltx_core.cli`)."""

import sys

from .cli import main

sys.exit(main())
