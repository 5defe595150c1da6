"""LTX-Video inference core: exact loaders, model, sampler and pipeline, no ComfyUI."""

__version__ = "0.1.0"
