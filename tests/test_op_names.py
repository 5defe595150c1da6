"""The core's custom ops: a kernel traced by torch.compile is one op node; run eagerly it is
the plain function, without the op's dispatch."""

import torch
from torch import Tensor

from ltx_core.op_names import NAMESPACE, op_name, traced_as_op


def test_op_names_live_in_this_copys_namespace():
    assert op_name("qk_norm_rope") == f"{NAMESPACE}::qk_norm_rope" and NAMESPACE == "ltx_core"


def test_a_traced_op_runs_its_function_eagerly_and_is_one_node_when_compiled():
    compiling = []

    @traced_as_op("test_doubled", lambda x: x.new_empty(x.shape))
    def doubled(x: Tensor) -> Tensor:
        compiling.append(torch.compiler.is_compiling())
        return x * 2

    x = torch.arange(3.0)
    assert torch.equal(doubled(x), x * 2) and compiling == [False]  # eager: the function itself

    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module

    assert torch.equal(torch.compile(doubled, backend=backend, fullgraph=True)(x), x * 2)
    targets = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert targets == [f"{NAMESPACE}.test_doubled.default"]  # the op, opaque: its body not traced
    assert doubled.op is not None and compiling == [False, False]  # run by the op, never traced
