"""Build a ResNet-50 v1.5-shaped ONNX model with MLPerf's tensor names, without any framework.

Same graph shape and cost as the MLPerf ONNX ResNet-50 (input `input_tensor:0` float32
[N,3,224,224]; outputs `ArgMax:0` int64 [N] and `softmax_tensor:0` float32 [N,1001]; 25.6 M
parameters, ~4 GFLOP per image), with *random* weights: it measures throughput honestly and
classifies nothing. Batch norm is folded into the convolutions, as inference graphs usually are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_NAME = "input_tensor:0"
ARGMAX_NAME = "ArgMax:0"
SOFTMAX_NAME = "softmax_tensor:0"
NUM_CLASSES = 1001  # class 0 is "background", as in the MLPerf TF/ONNX ResNet-50

_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)
_EXPANSION = 4


class _GraphBuilder:
    def __init__(self, seed: int) -> None:
        from onnx import helper

        self.helper = helper
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def _constant(self, prefix: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def conv(self, x: str, in_ch: int, out_ch: int, kernel: int, stride: int,
             relu: bool, gain: float = 1.0) -> str:
        std = gain * np.sqrt(2.0 / (in_ch * kernel * kernel))
        weight = (self.rng.standard_normal((out_ch, in_ch, kernel, kernel)) * std).astype(np.float32)
        bias = np.zeros(out_ch, dtype=np.float32)
        out = self._name("conv")
        pad = kernel // 2
        self.nodes.append(self.helper.make_node(
            "Conv", [x, self._constant("w", weight), self._constant("b", bias)], [out],
            kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4))
        return self.relu(out) if relu else out

    def relu(self, x: str) -> str:
        out = self._name("relu")
        self.nodes.append(self.helper.make_node("Relu", [x], [out]))
        return out

    def add(self, a: str, b: str) -> str:
        out = self._name("add")
        self.nodes.append(self.helper.make_node("Add", [a, b], [out]))
        return out

    def bottleneck(self, x: str, in_ch: int, width: int, stride: int) -> str:
        out_ch = width * _EXPANSION
        branch = self.conv(x, in_ch, width, 1, 1, relu=True)
        branch = self.conv(branch, width, width, 3, stride, relu=True)  # v1.5: stride here
        # A small last layer keeps activations bounded over 16 residual additions.
        branch = self.conv(branch, width, out_ch, 1, 1, relu=False, gain=0.2)
        shortcut = x
        if stride != 1 or in_ch != out_ch:
            shortcut = self.conv(x, in_ch, out_ch, 1, stride, relu=False)
        return self.relu(self.add(branch, shortcut))


def build_resnet50(path: str | Path, seed: int = 0) -> Path:
    """Write the model to path and return it."""
    import onnx
    from onnx import TensorProto, helper

    g = _GraphBuilder(seed)
    x = g.conv(INPUT_NAME, 3, 64, 7, 2, relu=True)
    pooled = g._name("maxpool")
    g.nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3],
                                    strides=[2, 2], pads=[1, 1, 1, 1]))
    x, channels = pooled, 64
    for width, blocks, stride in _STAGES:
        for block in range(blocks):
            x = g.bottleneck(x, channels, width, stride if block == 0 else 1)
            channels = width * _EXPANSION
    gap = g._name("gap")
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], [gap]))
    flat = g._name("flatten")
    g.nodes.append(helper.make_node("Flatten", [gap], [flat], axis=1))
    fc_weight = (g.rng.standard_normal((channels, NUM_CLASSES)) * 0.01).astype(np.float32)
    logits = g._name("logits")
    g.nodes.append(helper.make_node(
        "Gemm", [flat, g._constant("fc_w", fc_weight),
                 g._constant("fc_b", np.zeros(NUM_CLASSES, np.float32))], [logits]))
    g.nodes.append(helper.make_node("Softmax", [logits], [SOFTMAX_NAME], axis=1))
    g.nodes.append(helper.make_node("ArgMax", [logits], [ARGMAX_NAME], axis=1, keepdims=0))
    graph = helper.make_graph(
        g.nodes, "resnet50_v1.5_random", [
            helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(ARGMAX_NAME, TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info(SOFTMAX_NAME, TensorProto.FLOAT, ["N", NUM_CLASSES])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="ray-mlperf-vision")
    model.ir_version = 8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    onnx.save(model, str(temporary))
    temporary.replace(path)
    return path
