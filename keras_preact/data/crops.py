"""Evaluation crops on decoded images, shared by the data pipelines and the export signatures.

The paper evaluates a 224x224 centre crop of the image resized so its shorter
side is 256, and a single 320x320 crop of the image resized so its shorter side
is 320. Both are `eval_crop(image, crop_size)`; other sizes keep the 224/256
ratio unless `resize_size` is given.
"""

from __future__ import annotations

import tensorflow as tf

from keras_preact import options
from keras_preact.options import INTERPOLATIONS

# The eval protocol's rule and choices (one home: keras_preact.options).
default_resize_size = options.resize_size


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
    if resize_size is None:
        resize_size = default_resize_size(crop_size, crop_fraction)
    resize_size = int(resize_size)
    if resize_size < crop_size:
        raise ValueError(f"resize_size ({resize_size}) must be >= crop_size ({crop_size}).")
    image = resize_shorter_side(image, resize_size, interpolation)
    image = center_crop(image, crop_size)
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape([crop_size, crop_size, None])
    return image
