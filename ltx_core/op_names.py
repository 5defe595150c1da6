"""Names of the core's torch custom ops.

torch's op registry is global. The ops live in a namespace of this copy of the package, so
a second copy of the core in one process (the node pack loaded beside an installed
`ltx_core`, or Lightricks' LTX-2 library, also named `ltx_core`) never replaces them.
"""

import re

NAMESPACE = re.sub(r"\W", "_", __package__)


def op_name(name: str) -> str:
    return f"{NAMESPACE}::{name}"
