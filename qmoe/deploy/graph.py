"""A small ONNX graph builder: `g.op("MatMul", a, b)` returns the output's name.

Just enough to write the exported graphs as readable straight-line code; constants become
initializers, names are generated, and `model()` checks the result with onnx's checker.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21  # ONNX opset (LayerNormalization, QuantizeLinear per axis, ScatterND reduction)
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib operators (MatMulNBits)
IR_VERSION = 10


class Graph:
    """Nodes and initializers of one graph under construction."""

    def __init__(self, name: str = "qmoe"):
        self.name, self.nodes, self.initializers, self._n = name, [], [], 0
        self._consts: dict[tuple, str] = {}

    def fresh(self, hint: str = "t") -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value, dtype=None, hint: str = "c") -> str:
        """An initializer holding `value` (small scalars/vectors are shared by value)."""
        array = np.asarray(value, dtype=dtype)
        key = None
        if array.size <= 16:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._consts:
                return self._consts[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        if key is not None:
            self._consts[key] = name
        return name

    def op(self, op_type: str, *inputs, outputs: int = 1, domain: str = "", hint: str | None = None, **attrs):
        """Append a node; returns its output name (or a list of names when `outputs` > 1)."""
        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, [i or "" for i in inputs], names, domain=domain or None, **attrs))
        return names[0] if outputs == 1 else names

    def branch(self, name: str) -> "Graph":
        """A builder for a subgraph (an If branch) with its own nodes and constants; outer names stay in scope.

        Constants a branch uses live in the branch: ONNX Runtime pre-packs a kernel's weights only when they are
        initializers of the kernel's own graph (weights reached from an outer scope ran ~50x slower here)."""
        child = Graph(name)
        child.fresh = self.fresh  # one name space: no shadowing between scopes
        return child

    def body(self, output: str) -> onnx.GraphProto:
        """This builder's nodes as a subgraph with one float output and no inputs."""
        if not any(output in n.output for n in self.nodes):  # an outer-scope value: pass it through
            output = self.op("Identity", output)
        return helper.make_graph(self.nodes, self.name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                                 self.initializers)

    def rename(self, tensor: str, name: str) -> str:
        """Give a tensor a public name (a graph output)."""
        self.nodes.append(helper.make_node("Identity", [tensor], [name]))
        return name

    def model(self, inputs: list, outputs: list, doc: str = "", metadata: dict | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                                  producer_name="qmoe", doc_string=doc)
        model.ir_version = IR_VERSION
        for k, v in (metadata or {}).items():
            model.metadata_props.add(key=k, value=str(v))
        onnx.checker.check_model(model)
        return model


def float_input(name: str, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def float_output(name: str, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
