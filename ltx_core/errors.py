"""Errors the core raises for bad input: each message names the input, says what was
wrong and what is allowed. They subclass ValueError so callers may catch either."""

import math


class LTXVError(ValueError):
    """Base of every error the core raises on purpose."""


class CheckpointError(LTXVError):
    """A model file that cannot be loaded: missing, truncated, of another model, a pickle."""


class SettingsError(LTXVError):
    """A size, count or setting outside what the model accepts."""


# ---------------------------------------------------------------- checks shared by the core's settings


def is_int(value) -> bool:
    """A whole number, and not a bool (True is an int to Python, not a frame count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_number(name: str, value, minimum: float, allowed: str, inclusive: bool = True) -> None:
    """A finite number at least `minimum` (above it unless `inclusive`), else a SettingsError
    that names the setting, the value and what is allowed."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (not inclusive and value == minimum):
        raise SettingsError(f"{name} {value!r} is not allowed; allowed: {allowed}")
