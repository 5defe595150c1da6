"""Errors the core raises for bad input: each message names the input, says what was
wrong and what is allowed. They subclass ValueError so callers may catch either."""


class LTXVError(ValueError):
    """Base of every error the core raises on purpose."""


class CheckpointError(LTXVError):
    """A model file that cannot be loaded: missing, truncated, of another model, a pickle."""


class SettingsError(LTXVError):
    """A size, count or setting outside what the model accepts."""
