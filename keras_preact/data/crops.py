"""Evaluation crops on decoded images, shared by the data pipelines and the export signatures.

The paper evaluates a 224x224 centre crop of the image resized so its shorter
side is 256, and a single 320x320 crop of the image resized so its shorter side
is 320. Both are `eval_crop(image, crop_size)`; other sizes keep the 224/256
ratio unless `resize_size` is given.

Test-time augmentation (`TTA_MODES`, `tta_crops`) averages the model over
several views of one resized image: `"flip"` the eval crop and its mirror,
`"ten_crop"` fb.resnet.torch's ten crops (`ten_crop`).
"""

from __future__ import annotations

import tensorflow as tf

from keras_preact import options
from keras_preact.options import INTERPOLATIONS

# The eval protocol's rule and choices (one home: keras_preact.options).
default_resize_size = options.resize_size
# Test-time augmentation: views per image of each mode (`tta_crops`).
TTA_VIEWS = {"none": 1, "flip": 2, "ten_crop": 10}
TTA_MODES = tuple(TTA_VIEWS)


def decode_image(encoded, channels=3):
    """Decodes JPEG, PNG, GIF (first frame) or BMP bytes to a uint8 `[H, W, 3]` tensor.

    Grayscale and CMYK JPEGs come out as RGB. Undecodable bytes raise
    `InvalidArgumentError` when the op runs.
    """
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def resize_shorter_side(image, size, interpolation="bilinear"):
    """Resizes `[H, W, C]` so that min(H, W) == size, keeping the aspect ratio (antialiased).

    `interpolation` is `"bilinear"` (keras.applications, fb.resnet.torch) or
    `"bicubic"` (timm's evaluation).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"Unknown interpolation {interpolation!r}. Allowed values: "
            f"{', '.join(map(repr, INTERPOLATIONS))}."
        )
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_height = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size)
    new_width = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size)
    resized = tf.image.resize(
        tf.cast(image, tf.float32), [new_height, new_width], method=interpolation, antialias=True
    )
    return resized


def center_crop(image, crop_size):
    """The central `crop_size x crop_size` window of `[H, W, C]` (H, W >= crop_size)."""
    shape = tf.shape(image)
    top = (shape[0] - crop_size) // 2
    left = (shape[1] - crop_size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, crop_size, crop_size)


def _checked_resize_size(crop_size, resize_size, crop_fraction):
    if resize_size is None:
        resize_size = default_resize_size(crop_size, crop_fraction)
    resize_size = int(resize_size)
    if resize_size < crop_size:
        raise ValueError(f"resize_size ({resize_size}) must be >= crop_size ({crop_size}).")
    return resize_size


def eval_crop(image, crop_size=224, resize_size=None, interpolation="bilinear", crop_fraction=None):
    """Resize shorter side, then centre crop: float32 `[crop, crop, 3]` in [0, 255].

    `resize_size` defaults to `default_resize_size(crop_size, crop_fraction)`;
    pass a weights source's `interpolation` and `crop_fraction` (what
    `keras_preact.preprocessing.eval_preprocessing(model)` returns) to
    evaluate the way the source published its accuracy.

    Example:

    >>> import numpy as np
    >>> eval_crop(np.zeros((300, 400, 3), np.uint8), 224).shape
    TensorShape([224, 224, 3])
    """
    resize_size = _checked_resize_size(crop_size, resize_size, crop_fraction)
    image = resize_shorter_side(image, resize_size, interpolation)
    image = center_crop(image, crop_size)
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape([crop_size, crop_size, None])
    return image


def ten_crop(image, crop_size=224, resize_size=None, interpolation="bilinear", crop_fraction=None):
    """fb.resnet.torch's ten crops (its `TenCrop`): float32 `[10, crop, crop, 3]` in [0, 255].

    The image is resized as `eval_crop` resizes it; the views are its centre
    crop (exactly `eval_crop`'s), top-left, top-right, bottom-left and
    bottom-right corner crops, then the same five mirrored left-right.
    (fb.resnet.torch crops the mirrored image instead: the same ten windows,
    except that its centre offset rounds up where ours rounds down.) Where
    `resize_size` equals `crop_size` (a 320 crop from 320) the corner windows
    span the whole shorter side, so top and bottom ones coincide: a landscape
    photo gets three distinct windows (and their mirrors), the left and right
    ones counted twice in the mean; a square one gets the crop alone.

    >>> import numpy as np
    >>> ten_crop(np.zeros((300, 400, 3), np.uint8), 224).shape
    TensorShape([10, 224, 224, 3])
    """
    resize_size = _checked_resize_size(crop_size, resize_size, crop_fraction)
    image = resize_shorter_side(image, resize_size, interpolation)
    shape = tf.shape(image)
    bottom, right = shape[0] - crop_size, shape[1] - crop_size
    corners = [(bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right)]
    crops = tf.stack(
        [
            tf.image.crop_to_bounding_box(image, top, left, crop_size, crop_size)
            for top, left in corners
        ]
    )
    crops = tf.clip_by_value(crops, 0.0, 255.0)
    crops = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
    crops.set_shape([10, crop_size, crop_size, None])
    return crops


def tta_crops(
    image, tta="none", crop_size=224, resize_size=None, interpolation="bilinear", crop_fraction=None
):
    """The views of one image that test-time augmentation `tta` averages over.

    float32 `[TTA_VIEWS[tta], crop, crop, 3]`: `"none"` the eval crop alone,
    `"flip"` the eval crop and its left-right mirror, `"ten_crop"` `ten_crop`'s
    ten. A model's prediction under TTA is its mean output over the views.

    >>> import numpy as np
    >>> tta_crops(np.zeros((300, 400, 3), np.uint8), "flip").shape
    TensorShape([2, 224, 224, 3])
    """
    options.check_choice("tta", tta, TTA_MODES)
    if tta == "ten_crop":
        return ten_crop(image, crop_size, resize_size, interpolation, crop_fraction)
    crop = eval_crop(image, crop_size, resize_size, interpolation, crop_fraction)[None]
    if tta == "flip":
        crop = tf.concat([crop, tf.reverse(crop, axis=[2])], axis=0)
    return crop
