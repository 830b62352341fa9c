"""Known-answer data and models that the tests build themselves.

The images are generated; their model inputs are computed here *independently* of the harness,
straight from the rules of SPEC.md, with NumPy and OpenCV. The model recognises an image only if
the tensor it receives equals (to float rounding) the one computed here:

    features = flatten(input) @ R          R: random +-1, float64 (exact enough to see 1 unit)
    d_k      = |features - template_k|^2   one template per image of the set
    label    = labels[argmin d] if min d < 0.5 else REJECT

So any difference in decoding, colour order, resize, crop, normalisation, layout, the order of
results or a single sample changes the answer, while the correct pipeline scores 100 %.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

FEATURES = 8
THRESHOLD = 0.5
REJECT_CLASS = 0  # "background" of a 1001-class model: label -1 after the offset, never right


# --- data ----------------------------------------------------------------------------------

def write_images(folder: Path, count: int, seed: int) -> list[tuple[str, int]]:
    """Varied sizes and aspect ratios (portrait, landscape, square), JPEG and PNG, gray ones
    too; distinct labels 0..999. Writes val_map.txt; returns its (file, label) lines."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.choice(1000, size=count, replace=False)
    lines = []
    for i in range(count):
        height = int(rng.integers(180, 420))
        width = [height, int(rng.integers(180, 520)), int(height * 1.5)][i % 3]
        image = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image.astype(np.int16) + rng.integers(-20, 21, image.shape), 0, 255)
        image = image.astype(np.uint8)
        if i % 5 == 2:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        name = f"img_{i:03d}." + ("png" if i % 4 == 1 else "jpg")
        cv2.imwrite(str(folder / name), image)
        lines.append((name, int(labels[i])))
    (folder / "val_map.txt").write_text("".join(f"{n} {lab}\n" for n, lab in lines))
    return lines


# --- the SPEC's pre-processing, written independently of datasets/transforms.py -------------

def spec_preprocess(path: Path, recipe: str, layout: str) -> np.ndarray:
    """float32 model input for one image following SPEC.md's table."""
    bgr = cv2.imread(str(path))  # always 3 channels, BGR
    rgb = bgr[:, :, ::-1]
    h, w = rgb.shape[:2]
    if recipe in ("vgg", "mobilenet", "vgg_linear", "bgr"):
        short = 256
        if h > w:
            size = (short, int(short * h / w))  # (w, h)
        else:
            size = (int(short * w / h), short)
        interpolation = cv2.INTER_AREA if recipe in ("vgg", "bgr") else cv2.INTER_LINEAR
        source = bgr if recipe == "bgr" else np.ascontiguousarray(rgb)
        resized = cv2.resize(source, size, interpolation=interpolation)
        rh, rw = resized.shape[:2]
        top, left = int((rh - 224) / 2), int((rw - 224) / 2)
        crop = resized[top:top + 224, left:left + 224].astype(np.float32)
        if recipe == "mobilenet":
            tensor = ((crop / np.float32(255)) - np.float32(0.5)) * np.float32(2)
        else:
            tensor = crop - np.array([123.68, 116.78, 103.94], dtype=np.float32)
    else:
        raise ValueError(recipe)
    tensor = tensor.astype(np.float32)
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)) if layout == "NCHW" else tensor


# --- the model -------------------------------------------------------------------------------

def _recogniser(tensors: list[np.ndarray], labels: list[int], seed: int):
    """The projection, the templates of the tensors, and the 1001-class id of each slot."""
    rng = np.random.default_rng(seed)
    dim = int(np.prod(tensors[0].shape))
    projection = rng.choice([-1.0, 1.0], size=(dim, FEATURES)).astype(np.float64)
    templates = np.stack([t.reshape(-1).astype(np.float64) @ projection for t in tensors])
    return projection, templates, np.asarray([label + 1 for label in labels], dtype=np.int64)


def build_model(path: Path, tensors: list[np.ndarray], labels: list[int], layout: str,
                kind: str = "argmax", input_name: str = "input_tensor:0",
                output_name: str = "ArgMax:0", symbolic_shape: bool = False,
                seed: int = 1) -> Path:
    """An ONNX model that answers labels[i] (+1: 1001-class convention) for tensors[i] only.

    kind "argmax": output int64 [N] class ids (like the MLPerf ResNet-50's ArgMax:0).
    kind "scores": output float32 [N, 1001] one-hot scores (like MobileNet's softmax).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sample_shape = tensors[0].shape
    projection, templates, class_of_slot = _recogniser(tensors, labels, seed)
    init = [numpy_helper.from_array(projection, "R"), numpy_helper.from_array(templates, "T"),
            numpy_helper.from_array(class_of_slot, "classes"),
            numpy_helper.from_array(np.array(THRESHOLD, np.float64), "threshold"),
            numpy_helper.from_array(np.array(REJECT_CLASS, np.int64), "reject"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [
        helper.make_node("Cast", [input_name], ["x64"], to=TensorProto.DOUBLE),
        helper.make_node("Flatten", ["x64"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "R"], ["features"]),
        helper.make_node("Unsqueeze", ["features", "axis1"], ["features3"]),
        helper.make_node("Sub", ["features3", "T"], ["diff"]),
        helper.make_node("ReduceSumSquare", ["diff"], ["dist"], axes=[2], keepdims=0),
        helper.make_node("ArgMin", ["dist"], ["slot"], axis=1, keepdims=0),
        helper.make_node("ReduceMin", ["dist"], ["best"], axes=[1], keepdims=0),
        helper.make_node("Less", ["best", "threshold"], ["recognised"]),
        helper.make_node("Gather", ["classes", "slot"], ["candidate"], axis=0),
        helper.make_node("Where", ["recognised", "candidate", "reject"],
                         [output_name if kind == "argmax" else "class_id"]),
    ]
    if kind == "scores":
        init += [numpy_helper.from_array(np.array(1001, np.int64), "depth"),
                 numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onehot_values")]
        nodes.append(helper.make_node("OneHot", ["class_id", "depth", "onehot_values"],
                                      [output_name], axis=-1))
        output = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1001])
    else:
        output = helper.make_tensor_value_info(output_name, TensorProto.INT64, ["N"])
    dims = ["N", "a", "b", "c"] if symbolic_shape else ["N", *sample_shape]
    graph = helper.make_graph(
        nodes, "known_answer", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                              dims)], [output], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def build_torch_model(path: Path, tensors: list[np.ndarray], labels: list[int], fmt: str,
                      seed: int = 1, for_tvm: bool = False) -> Path:
    """The same known-answer model in PyTorch (class ids out), saved as TorchScript
    (fmt "torchscript") or as a torch.export program (fmt "export", a .pt2 file).

    for_tvm: the same answers in ops TVM's torch frontend keeps in float64: it imports every
    matmul in float32 (features then move by ~0.5, the threshold) and has no min(dim).
    """
    import torch

    projection, templates, classes = _recogniser(tensors, labels, seed)

    class Recogniser(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("projection", torch.from_numpy(projection))
            self.register_buffer("templates", torch.from_numpy(templates))
            self.register_buffer("classes", torch.from_numpy(classes))

        def forward(self, x):
            flat = x.double().flatten(1)
            if for_tvm:
                features = (flat[:, :, None] * self.projection[None]).sum(1)
            else:
                features = flat @ self.projection
            distances = ((features[:, None, :] - self.templates[None]) ** 2).sum(-1)
            if for_tvm:
                negated_best, slot = (-distances).max(dim=1)
                best = -negated_best
            else:
                best, slot = distances.min(dim=1)
            reject = torch.full_like(slot, REJECT_CLASS)
            return torch.where(best < THRESHOLD, self.classes[slot], reject)

    example = torch.from_numpy(np.stack(tensors[:2]))
    module = Recogniser().eval()
    if fmt == "torchscript":
        torch.jit.trace(module, example).save(str(path))
    else:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    return path
