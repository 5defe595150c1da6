"""The core's torch custom ops: their names, and how a kernel becomes one.

torch's op registry is global. The ops live in a namespace of this copy of the package, so
a second copy of the core in one process (the node pack loaded beside an installed
`ltx_core`, or Lightricks' LTX-2 library, also named `ltx_core`) never replaces them.
"""

import functools
import re
from collections.abc import Callable

NAMESPACE = re.sub(r"\W", "_", __package__)


def op_name(name: str) -> str:
    return f"{NAMESPACE}::{name}"


def traced_as_op(name: str, fake: Callable) -> Callable[[Callable], Callable]:
    """Decorator: `fn` registered as the custom op `name` (`fake` gives its outputs' shapes
    when traced), and returned as a function that calls the op while torch.compile traces it
    (compiled graphs and CUDA graphs then keep the kernel whole) and `fn` itself when run
    eagerly, where the op's Python dispatch would cost more host time per call than the
    kernel's launch. The op is the returned function's `op`."""
    import torch

    def register(fn: Callable) -> Callable:
        op = torch.library.custom_op(op_name(name), mutates_args=())(fn)
        op.register_fake(fake)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            return (op if torch.compiler.is_compiling() else fn)(*args, **kwargs)

        call.op = op
        return call

    return register
