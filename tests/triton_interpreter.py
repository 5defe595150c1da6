"""Checks of Triton kernels on the CPU: each runs in a fresh interpreter under Triton's CPU
interpreter (TRITON_INTERPRET=1), which must be chosen before Triton is imported."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def interpreted(module: str, call: str) -> None:
    """Run `call`, an expression on the test module `module` (imported as `checks`), in a
    fresh interpreter under Triton's interpreter; its assertion, if any, fails the caller."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = f"import {module} as checks; checks.{call}"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
