"""Fold a QDQ-quantized ONNX model into float32: dequantized weights, activations not rounded.

A statically quantized model in QDQ form (onnxruntime's quantizer) stores each weight as an int8
initializer behind a ``DequantizeLinear`` and rounds each activation through a
``QuantizeLinear`` → ``DequantizeLinear`` pair. Folding computes every dequantized weight once
(``(w - zero_point) * scale``, per tensor or per axis) and drops the activation pairs, leaving a
float32 graph with the same weights, whose activations are no longer rounded at each layer.

Why: rounding at every layer makes the quantized model's in-between readings jump when its input
changes by far less than any audio noise, or when another CPU's int8 kernels round one step
differently (benchmarks/README.md, "Turn completion model"); the folded graph's readings do not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def fold_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 copy of ``model`` with every ``QuantizeLinear``/``DequantizeLinear`` folded away.

    Raises ValueError for a graph this does not cover: a ``DequantizeLinear`` of a computed tensor
    not made by a ``QuantizeLinear``, a ``QuantizeLinear`` whose output is a graph output or reaches
    anything but a ``DequantizeLinear``, blocked quantization, or a parameter that is not an
    initializer.
    """
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {output.name for output in graph.output}

    replace: dict[str, str] = {}
    dropped: set[str] = set()
    weights: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("block_size"):
            raise ValueError(f"{node.op_type} {node.name!r}: blocked quantization is not supported")
        if node.op_type == "QuantizeLinear":
            if node.output[0] in graph_outputs or any(
                user.op_type != "DequantizeLinear" for user in consumers.get(node.output[0], [])
            ):
                raise ValueError(f"QuantizeLinear {node.name!r} feeds something other than a DequantizeLinear")
            dropped.add(node.output[0])
            continue
        source = node.input[0]
        if source in initializers:
            weights.append(numpy_helper.from_array(_dequantize(node, initializers, attributes), node.output[0]))
        elif (quantize := producers.get(source)) is not None and quantize.op_type == "QuantizeLinear":
            replace[node.output[0]] = quantize.input[0]
        else:
            raise ValueError(f"DequantizeLinear {node.name!r}: input {source!r} is neither a weight nor quantized")
        dropped.add(node.output[0])

    def resolve(name: str) -> str:  # through chains: DequantizeLinear -> QuantizeLinear -> DequantizeLinear
        while name in replace:
            name = replace[name]
        return name

    kept = [node for node in graph.node if not set(node.output) & dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    # A graph output made by a folded pair keeps its name.
    kept += [
        onnx.helper.make_node("Identity", [resolve(output.name)], [output.name])
        for output in graph.output
        if output.name in replace
    ]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(weights)
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    onnx.checker.check_model(folded)
    return folded


def _dequantize(
    node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], attributes: dict[str, Any]
) -> np.ndarray:
    """``DequantizeLinear`` of an initializer, computed: ``(x - zero_point) * scale``, per tensor or per axis."""

    def constant(name: str) -> np.ndarray:
        if name not in initializers:
            raise ValueError(f"DequantizeLinear {node.name!r}: {name!r} is not an initializer")
        return numpy_helper.to_array(initializers[name]).astype(np.float32)

    weight = constant(node.input[0])
    scale = constant(node.input[1])
    zero = constant(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
    if scale.ndim == 1 and weight.ndim > 1:  # per axis
        shape = [1] * weight.ndim
        shape[int(attributes.get("axis", 1))] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((weight - zero) * scale).astype(np.float32)
