"""Image pre-processing of the MLPerf vision reference, split in two halves.

The reference turns every image into a float32 tensor once and caches that. We split each
recipe into a *geometric* half (decode, BGR->RGB, resize, crop) that is cached on disk and kept
in Ray's object store, and a *normalising* half that runs on the worker for each batch. The
values are bit-identical to the reference's, because each half applies the same operations in
the same order and type. The ImageNet recipes and coco-300 resize uint8 images, so their
geometric half is uint8 and the cache holds 4x fewer bytes than the reference's; the other
detection recipes resize a float32 image (fractions kept), so theirs stays float32.

All functions take and return NumPy arrays; none touches Ray or the disk.
"""

from __future__ import annotations

import numpy as np

# The reference's per-channel means for the TF/ONNX ResNet-50 ("vgg" pre-processing), RGB order.
VGG_MEAN_RGB = np.array([123.68, 116.78, 103.94], dtype=np.float32)
# torchvision's ImageNet statistics, used by the PyTorch models.
TORCH_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
TORCH_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# The reference resizes the short side to out_size * 100 / 87.5 (224 -> 256) before cropping.
_CROP_FRACTION_PERCENT = 87.5


def _opencv():
    """OpenCV, imported on first use: listing a dataset or normalising a batch needs none, and
    `python -m sut --help` should not pay for it."""
    import cv2

    return cv2


def to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    """Return a 3-channel RGB uint8 image from what cv2.imread gives (BGR, maybe gray)."""
    cv2 = _opencv()
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    elif image_bgr.shape[2] == 4:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_BGRA2BGR)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)


def resize_short_side(image: np.ndarray, out_height: int, out_width: int,
                      interpolation: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the short side is out_size / 0.875 (reference rule).

    The long side is truncated, as the reference does: int(256 * long / short).
    """
    cv2 = _opencv()
    height, width = image.shape[:2]
    new_height = int(100.0 * out_height / _CROP_FRACTION_PERCENT)
    new_width = int(100.0 * out_width / _CROP_FRACTION_PERCENT)
    if height > width:
        target_w, target_h = new_width, int(new_height * height / width)
    else:
        target_h, target_w = new_height, int(new_width * width / height)
    return cv2.resize(image, (target_w, target_h), interpolation=interpolation)


def center_crop(image: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """Crop the centre; offsets are truncated towards zero as in the reference."""
    height, width = image.shape[:2]
    left = int((width - out_width) / 2)
    top = int((height - out_height) / 2)
    return image[top:top + out_height, left:left + out_width]


def crop_imagenet_vgg(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Geometric half of the reference's pre_process_vgg: INTER_AREA resize, centre crop."""
    cv2 = _opencv()
    rgb = to_rgb(image_bgr)
    resized = resize_short_side(rgb, size[0], size[1], cv2.INTER_AREA)
    return np.ascontiguousarray(center_crop(resized, size[0], size[1]))


def crop_imagenet_mobilenet(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Geometric half of the reference's pre_process_mobilenet: INTER_LINEAR, centre crop."""
    cv2 = _opencv()
    rgb = to_rgb(image_bgr)
    resized = resize_short_side(rgb, size[0], size[1], cv2.INTER_LINEAR)
    return np.ascontiguousarray(center_crop(resized, size[0], size[1]))


def crop_imagenet_pytorch(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Geometric half of the reference's pre_process_imagenet_pytorch.

    The reference uses torchvision on a PIL image: resize the short side to 256 with PIL's
    bilinear filter (long side int(256 * long / short)), then crop 224 at offsets
    int(round((dim - 224) / 2)). Pillow alone reproduces that byte for byte.
    """
    from PIL import Image

    rgb = to_rgb(image_bgr)
    height, width = rgb.shape[:2]
    short_target = int(100.0 * size[0] / _CROP_FRACTION_PERCENT)
    if width <= height:
        new_w, new_h = short_target, int(short_target * height / width)
    else:
        new_w, new_h = int(short_target * width / height), short_target
    resized = Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - size[0]) / 2.0))
    left = int(round((new_w - size[1]) / 2.0))
    cropped = resized.crop((left, top, left + size[1], top + size[0]))
    return np.asarray(cropped, dtype=np.uint8).copy()


def resize_plain_float(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Geometric half of the reference's COCO and OpenImages recipes (its maybe_resize): the
    image becomes float32 *before* a plain INTER_LINEAR resize to (height, width), aspect not
    kept, so the resized values keep their fractions (float32 out)."""
    cv2 = _opencv()
    rgb = to_rgb(image_bgr).astype(np.float32)  # RGB order: an exact permutation either way
    return np.ascontiguousarray(cv2.resize(rgb, (size[1], size[0]),
                                           interpolation=cv2.INTER_LINEAR))


def resize_plain_truncated(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """SSD-MobileNet's recipe (coco-300): the float resize, then cast to uint8 as the reference
    does (np.asarray(img, dtype=np.uint8): fractions truncated)."""
    return np.asarray(resize_plain_float(image_bgr, size), dtype=np.uint8)


# --- normalising halves: uint8 batch in the model's layout -> float32 -------------------------

def _work_array(batch: np.ndarray, reuse: bool) -> np.ndarray:
    """The float32 array to normalise in place: the batch itself when the caller hands over a
    fresh float32 copy (reuse, as the worker does with its gathered rows), else a copy."""
    if reuse and batch.dtype == np.float32 and batch.flags.writeable:
        return batch
    return batch.astype(np.float32)


def keep_uint8(batch: np.ndarray, layout: str, reuse: bool = False) -> np.ndarray:
    """SSD-MobileNet (TF, ONNX) takes the uint8 image itself (`image_tensor:0`)."""
    return batch

def _channel_shape(layout: str) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector over a batch in this layout."""
    return (1, 3, 1, 1) if layout == "NCHW" else (1, 1, 1, 3)


def normalize_vgg(batch: np.ndarray, layout: str, reuse: bool = False) -> np.ndarray:
    """float32(x) - mean, as the reference's pre_process_vgg."""
    out = _work_array(batch, reuse)
    out -= VGG_MEAN_RGB.reshape(_channel_shape(layout))
    return out


def normalize_mobilenet(batch: np.ndarray, layout: str, reuse: bool = False) -> np.ndarray:
    """((float32(x) / 255) - 0.5) * 2 in float32, in the reference's order of operations."""
    out = _work_array(batch, reuse)
    out /= np.float32(255.0)
    out -= np.float32(0.5)
    out *= np.float32(2.0)
    return out


def normalize_torchvision(batch: np.ndarray, layout: str, reuse: bool = False) -> np.ndarray:
    """(float32(x) / 255 - mean) / std, as torchvision's to_tensor + normalize."""
    out = _work_array(batch, reuse)
    out /= np.float32(255.0)
    out -= TORCH_MEAN_RGB.reshape(_channel_shape(layout))
    out /= TORCH_STD_RGB.reshape(_channel_shape(layout))
    return out


def normalize_minus_one_to_one(batch: np.ndarray, layout: str, reuse: bool = False) -> np.ndarray:
    """(float32(x) - 127.5) / 127.5, the reference's SSD-MobileNet PyTorch recipe."""
    out = _work_array(batch, reuse)
    out -= np.float32(127.5)
    out /= np.float32(127.5)
    return out


def normalize_unit(batch: np.ndarray, layout: str, reuse: bool = False) -> np.ndarray:
    """x / 255 in float32, the reference's RetinaNet recipe (img /= 255. on its float image)."""
    out = _work_array(batch, reuse)
    out /= np.float32(255.0)
    return out


def to_layout(image_hwc: np.ndarray, layout: str) -> np.ndarray:
    """Put one HWC image into the stored layout (CHW for NCHW models)."""
    if layout == "NCHW":
        return np.ascontiguousarray(image_hwc.transpose(2, 0, 1))
    return image_hwc
