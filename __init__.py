"""ComfyUI entry point of the LTX-Video node pack.

ComfyUI imports this folder as a package and reads `NODE_CLASS_MAPPINGS`. Outside
ComfyUI (headless use of `ltx_core`, the test runner) the package still imports and
registers nothing. The nodes import the core relative to this package, so another
`ltx_core` on the Python path (Lightricks' LTX-2 core has that name) never shadows it.
"""

import importlib.util

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

if importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
