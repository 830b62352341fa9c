"""Known-answer detection data and models that the tests build themselves.

The images hold coloured rectangles at known places; the annotations file says where. The
model recognises each image from the exact tensor the SPEC's pre-processing gives (computed
here independently of the harness, with NumPy and OpenCV) and answers that image's ground-truth
boxes, in the output convention of the model it stands for. A correct pipeline therefore scores
mAP 1.0; a wrong pre-processing, layout, box order, class map or sample order does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# A few real COCO category ids: not contiguous, so a missing inverse map shows.
CATEGORY_IDS = (1, 3, 18, 44, 90)
SAMPLED_VALUES = 4096  # the recogniser looks at this many input values, spread over the image
THRESHOLD = 0.5


@dataclass(frozen=True)
class DetectionSet:
    root: Path
    annotations_file: Path
    images: list[dict]  # the file's images entries, in file order
    boxes: dict[int, list[tuple[list[float], int]]]  # image id -> [(xywh pixels, category id)]

    def listed(self, keep_empty: bool) -> list[dict]:
        return [image for image in self.images if keep_empty or self.boxes[image["id"]]]


def write_detection_set(root: Path, count: int, seed: int, images_folder: str,
                        annotations_name: str, empty_index: int | None = None) -> DetectionSet:
    """Images of varied sizes (one grayscale, one PNG-named-.jpg-free set of JPEGs) with 1-3
    boxes each; image `empty_index` has none. Writes a COCO-format annotations file."""
    rng = np.random.default_rng(seed)
    (root / images_folder).mkdir(parents=True, exist_ok=True)
    images, annotations, boxes = [], [], {}
    for i in range(count):
        height, width = int(rng.integers(200, 480)), int(rng.integers(200, 640))
        picture = rng.integers(0, 256, size=(height // 10 + 1, width // 10 + 1, 3), dtype=np.uint8)
        picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_CUBIC)
        image_id = 1000 + 37 * i  # ids unlike positions: a wrong index mapping shows
        boxes[image_id] = []
        for _ in range(0 if i == empty_index else int(rng.integers(1, 4))):
            w, h = int(rng.integers(40, width // 2)), int(rng.integers(40, height // 2))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            colour = rng.integers(0, 256, size=3).tolist()
            cv2.rectangle(picture, (x, y), (x + w - 1, y + h - 1), colour, thickness=-1)
            category = int(rng.choice(CATEGORY_IDS))
            boxes[image_id].append(([float(x), float(y), float(w), float(h)], category))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category, "bbox": [x, y, w, h],
                                "area": float(w * h), "iscrowd": 0})
        if i % 4 == 3:
            picture = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
        name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(root / images_folder / name), picture, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    annotations_file = root / annotations_name
    annotations_file.parent.mkdir(parents=True, exist_ok=True)
    annotations_file.write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]}))
    return DetectionSet(root, annotations_file, images, boxes)


# --- the SPEC's pre-processing, written independently of datasets/transforms.py -------------

def spec_detection_input(path: Path, dataset: str, layout: str) -> np.ndarray:
    """The model input for one image following the reference's recipes: the image becomes
    float32 before the colour swap and the INTER_LINEAR resize; coco-300 then casts to uint8,
    the others compute in float32."""
    image = np.array(cv2.imread(str(path)), dtype=np.float32)  # 3 channels even for gray files
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    size = {"coco-300": 300, "coco-300-pt": 300, "openimages-800-retinanet": 800,
            "openimages-800-retinanet-onnx": 800}.get(dataset, 1200)
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    if dataset == "coco-300":
        tensor = np.asarray(image, dtype=np.uint8)
    elif dataset == "coco-300-pt":
        tensor = image
        tensor -= 127.5
        tensor /= 127.5
    elif dataset.startswith("openimages"):
        tensor = image
        tensor /= 255.
    else:  # coco-1200*: torchvision statistics
        mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
        std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
        tensor = image / 255. - mean
        tensor = tensor / std
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)) if layout == "NCHW" else tensor


# --- the model -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnswerTables:
    """Per recognised image (one row each, plus a last 'nothing recognised' row)."""

    counts: np.ndarray  # [S+1] detections per row
    boxes: np.ndarray  # [S+1, K, 4] in the convention's order and units
    scores: np.ndarray  # [S+1, K], descending, 0 in the padding
    classes: np.ndarray  # [S+1, K]


def answer_tables(known: DetectionSet, listed: list[dict], convention: str,
                  contiguous_classes: bool = False) -> AnswerTables:
    """Ground truth as a model of this convention would emit it.

    convention: "tf" (ymin, xmin, ymax, xmax, normalised), "xy" (xmin, ymin, xmax, ymax,
    normalised) or "pixels800" (xmin, ymin, xmax, ymax in pixels of the 800 x 800 input).
    contiguous_classes: class ids 1..C (the index in the sorted category list, plus one).
    """
    most = max(1, max(len(known.boxes[image["id"]]) for image in listed))
    rows = len(listed) + 1
    counts = np.zeros(rows, np.float32)
    boxes = np.zeros((rows, most, 4), np.float32)
    scores = np.zeros((rows, most), np.float32)
    classes = np.zeros((rows, most), np.float32)
    for row, image in enumerate(listed):
        for k, ((x, y, w, h), category) in enumerate(known.boxes[image["id"]]):
            x0, y0 = x / image["width"], y / image["height"]
            x1, y1 = (x + w) / image["width"], (y + h) / image["height"]
            boxes[row, k] = {"tf": (y0, x0, y1, x1), "xy": (x0, y0, x1, y1),
                             "pixels800": (x0 * 800, y0 * 800, x1 * 800, y1 * 800)}[convention]
            scores[row, k] = 0.95 - 0.1 * k
            classes[row, k] = (sorted(CATEGORY_IDS).index(category) + 1 if contiguous_classes
                               else category)
        counts[row] = len(known.boxes[image["id"]])
    return AnswerTables(counts, boxes, scores, classes)


def _recogniser(tensors: list[np.ndarray], seed: int):
    """Which input values to look at, the projection, and the templates of the images."""
    rng = np.random.default_rng(seed)
    dim = int(np.prod(tensors[0].shape))
    picked = np.sort(rng.choice(dim, size=min(SAMPLED_VALUES, dim), replace=False))
    projection = rng.choice([-1.0, 1.0], size=(len(picked), 8))
    templates = np.stack([t.reshape(-1)[picked].astype(np.float64) @ projection
                          for t in tensors])
    return picked, projection, templates


def build_detection_model(path: Path, tensors: list[np.ndarray], tables: AnswerTables,
                          convention: str, input_name: str, output_names: list[str],
                          batch: int | None = None, unbatched_outputs: bool = False,
                          seed: int = 3) -> Path:
    """An ONNX model that answers tables' row i for tensors[i] and the last row otherwise.

    convention "tf": outputs num_detections, boxes, scores, classes (float32, batched).
    Otherwise: boxes, labels (int64), scores. unbatched_outputs (needs batch 1): outputs for the
    one image without a batch axis, cut to its own number of detections (the MLPerf RetinaNet
    ONNX file's shape).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    picked, projection, templates = _recogniser(tensors, seed)
    constants = {
        "picked": picked.astype(np.int64), "R": projection, "T": templates[None],
        "threshold": np.array(THRESHOLD), "no_row": np.array(len(tensors), np.int64),
        "table_counts": tables.counts, "table_boxes": tables.boxes,
        "table_scores": tables.scores, "table_classes": tables.classes,
        "table_labels": tables.classes.astype(np.int64),
        "zero": np.array([0], np.int64), "axis0": np.array([0], np.int64)}
    nodes = [
        helper.make_node("Cast", [input_name], ["x64"], to=TensorProto.DOUBLE),
        helper.make_node("Flatten", ["x64"], ["flat"], axis=1),
        helper.make_node("Gather", ["flat", "picked"], ["sampled"], axis=1),
        helper.make_node("MatMul", ["sampled", "R"], ["features"]),
        helper.make_node("Unsqueeze", ["features", "axis1"], ["features3"]),
        helper.make_node("Sub", ["features3", "T"], ["diff"]),
        helper.make_node("ReduceSumSquare", ["diff"], ["dist"], axes=[2], keepdims=0),
        helper.make_node("ArgMin", ["dist"], ["nearest"], axis=1, keepdims=0),
        helper.make_node("ReduceMin", ["dist"], ["best"], axes=[1], keepdims=0),
        helper.make_node("Less", ["best", "threshold"], ["recognised"]),
        helper.make_node("Where", ["recognised", "nearest", "no_row"], ["row"]),
    ]
    constants["axis1"] = np.array([1], np.int64)
    if convention == "tf":
        gathered = [("table_counts", output_names[0]), ("table_boxes", output_names[1]),
                    ("table_scores", output_names[2]), ("table_classes", output_names[3])]
    else:
        gathered = [("table_boxes", output_names[0]), ("table_labels", output_names[1]),
                    ("table_scores", output_names[2])]
    outputs = []
    for table, name in gathered:
        if not unbatched_outputs:
            nodes.append(helper.make_node("Gather", [table, "row"], [name], axis=0))
        else:  # batch of 1: drop the batch axis and keep only this image's detections
            nodes += [helper.make_node("Gather", [table, "row"], [name + "_b"], axis=0),
                      helper.make_node("Squeeze", [name + "_b", "axis0"], [name + "_all"]),
                      helper.make_node("Gather", ["table_counts", "row"], [name + "_nf"], axis=0),
                      helper.make_node("Cast", [name + "_nf"], [name + "_n"],
                                       to=TensorProto.INT64),
                      helper.make_node("Slice", [name + "_all", "zero", name + "_n", "axis0"],
                                       [name])]
        value = constants[table]
        element = TensorProto.INT64 if value.dtype == np.int64 else TensorProto.FLOAT
        shape = list(value.shape[1:]) if unbatched_outputs else ["N", *value.shape[1:]]
        if unbatched_outputs:
            shape[0] = "detections"
        outputs.append(helper.make_tensor_value_info(name, element, shape))
    input_type = TensorProto.UINT8 if tensors[0].dtype == np.uint8 else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "known_detections",
        [helper.make_tensor_value_info(input_name, input_type,
                                       [batch or "N", *tensors[0].shape])],
        outputs, [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_tf_detection_graph(path: Path, tensors: list[np.ndarray], tables: AnswerTables,
                             seed: int = 3) -> Path:
    """The same recogniser as a TF frozen GraphDef with SSD-MobileNet's names: uint8
    image_tensor:0 [N, H, W, 3] -> num_detections:0, detection_boxes:0, detection_scores:0,
    detection_classes:0 (tables in the "tf" convention)."""
    import tensorflow as tf

    picked, projection, templates = _recogniser(tensors, seed)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.uint8, [None, *tensors[0].shape],
                                          name="image_tensor")
        flat = tf.reshape(tf.cast(images, tf.float64), [-1, int(np.prod(tensors[0].shape))])
        features = tf.matmul(tf.gather(flat, picked, axis=1), projection)
        distances = tf.reduce_sum(tf.square(features[:, None, :] - templates[None]), axis=2)
        recognised = tf.reduce_min(distances, axis=1) < THRESHOLD
        row = tf.where(recognised, tf.argmin(distances, axis=1),
                       tf.fill(tf.shape(recognised), tf.constant(len(tensors), tf.int64)))
        for name, table in (("num_detections", tables.counts), ("detection_boxes", tables.boxes),
                            ("detection_scores", tables.scores),
                            ("detection_classes", tables.classes)):
            tf.identity(tf.gather(tf.constant(table), row), name=name)
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path
