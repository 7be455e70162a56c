"""Training augmentations, all stateless: the same `seed` gives the same result.

Every function takes a `seed`, a shape-[2] int tensor as used by the
`tf.random.stateless_*` ops; the pipelines give each element its own seed, so a
run is reproducible when `make_dataset(..., seed=...)` is set.

* `sample_crop_window` / `random_resized_crop`: the Inception-style crop of the
  paper's ImageNet training (area 8-100%, aspect ratio 3/4-4/3), done on the
  encoded bytes with `tf.image.decode_and_crop_jpeg` so that only the crop is
  decoded. Other formats (PNG, GIF, BMP) are decoded whole, then cropped.
* `pad_crop_flip`: the CIFAR augmentation (pad 4, random 32x32 crop, flip).
* `color_jitter`, `lighting`: fb.resnet.torch's colour noise (`color_augment=True`).

Example:

>>> import tensorflow as tf
>>> image = tf.zeros([32, 32, 3])
>>> pad_crop_flip(image, seed=[1, 2], pad=4).shape
TensorShape([32, 32, 3])
"""

from __future__ import annotations

import tensorflow as tf

from keras_preact.data import crops

# Inception-style random-resized-crop ranges (the paper's ImageNet training).
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_ATTEMPTS = 10

# AlexNet PCA lighting noise on ImageNet, as in fb.resnet.torch (pixels in [0, 1]).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# ITU-R 601 luma, fb.resnet.torch's grayscale.
_LUMA = (0.299, 0.587, 0.114)


def split_seed(seed, num):
    """`num` independent shape-[2] seeds derived from `seed`."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def sample_crop_window(
    image_shape,
    seed,
    area_range=AREA_RANGE,
    aspect_ratio_range=ASPECT_RATIO_RANGE,
    max_attempts=MAX_ATTEMPTS,
    fallback_fraction=224 / 256,
):
    """Samples an Inception-style crop window `[top, left, height, width]` (int32).

    Uses `tf.image.stateless_sample_distorted_bounding_box` with the whole image
    as the only box (`use_image_if_no_bounding_boxes`) and `min_object_covered=0`,
    so `area_range` and `aspect_ratio_range` (width / height) are the only
    constraints. When no window satisfies them in `max_attempts` tries the op
    returns the whole image; then, as in the TF-official ResNet pipeline, the
    window is a centre square of `fallback_fraction` of the shorter side (the
    geometry of the 224-from-256 eval crop).

    >>> sample_crop_window([375, 500, 3], seed=[0, 1]).shape
    TensorShape([4])
    """
    image_shape = tf.cast(tf.convert_to_tensor(image_shape), tf.int32)[:3]
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_size=tf.concat([image_shape[:2], [3]], axis=0),
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=tf.cast(seed, tf.int64),
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    height, width = image_shape[0], image_shape[1]
    failed = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
    side = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * fallback_fraction, tf.int32)
    side = tf.maximum(side, 1)
    centre = tf.stack([(height - side) // 2, (width - side) // 2, side, side])
    sampled = tf.stack([begin[0], begin[1], size[0], size[1]])
    return tf.where(failed, centre, sampled)


def _jpeg_is_complete(encoded, tail_bytes=1024):
    """True when a JPEG has its end-of-image marker (FF D9) in its last `tail_bytes` bytes.

    libjpeg pads a truncated file silently when the requested crop lies in the
    part that is still there, so a truncated JPEG is recognised by this marker,
    not by a decoding error.
    """
    length = tf.strings.length(encoded)
    tail = tf.strings.substr(encoded, tf.maximum(length - tail_bytes, 0), tail_bytes)
    tail = tf.io.decode_raw(tail, tf.uint8)
    return tf.reduce_any(tf.logical_and(tf.equal(tail[:-1], 0xFF), tf.equal(tail[1:], 0xD9)))


# The leading bytes by which `tf.io.decode_image` recognises a format: (format,
# offset, bytes). Bytes matching none of them are never an image it decodes.
IMAGE_SIGNATURES = (
    ("JPEG", 0, b"\xff\xd8\xff"),
    ("PNG", 0, b"\x89PNG\r\n\x1a\n"),
    ("GIF", 0, b"GIF8"),
    ("BMP", 0, b"BM"),
    ("WebP", 8, b"WEBP"),  # after "RIFF" and a size
    ("JPEG XL", 0, b"\xff\x0a"),
    ("JPEG XL", 4, b"JXL \r\n\x87\n"),
)
SIGNATURE_BYTES = max(offset + len(magic) for _, offset, magic in IMAGE_SIGNATURES)


def has_image_signature(header):
    """Whether `header`, the first `SIGNATURE_BYTES` (or more) bytes of a file, may be an image.

    False for an empty file and for bytes no decoder takes (a text file named
    .png); True does not promise the rest decodes (a truncated JPEG).

    >>> has_image_signature(b"GIF89a"), has_image_signature(b"hello"), has_image_signature(b"")
    (True, False, False)
    """
    return any(
        header[offset : offset + len(magic)] == magic for _, offset, magic in IMAGE_SIGNATURES
    )


def check_encoded_image(encoded):
    """Returns `encoded` unchanged, or fails (`InvalidArgumentError`) if it is a truncated JPEG.

    Other damage (unknown format, see `IMAGE_SIGNATURES`; bad data) fails in
    the decoder itself. The pipelines skip and record every element that
    fails (see `skipped_images`).
    """
    ok = tf.logical_or(tf.logical_not(tf.io.is_jpeg(encoded)), _jpeg_is_complete(encoded))
    with tf.control_dependencies(
        [tf.debugging.Assert(ok, ["Truncated JPEG: no end-of-image marker."])]
    ):
        return tf.identity(encoded)


def decode_and_crop(encoded, window):
    """Decodes only `window` ([top, left, height, width]) of an encoded image: uint8 `[h, w, 3]`.

    JPEG goes through `tf.image.decode_and_crop_jpeg` (only the window is
    decoded; grayscale and CMYK come out as RGB); PNG, GIF and BMP are decoded
    whole, then sliced. `window` may be a function of the image shape
    `[height, width, channels]`, so that it is computed from the header (JPEG)
    or the decoded image (others).
    """
    # Three small conds around one window (not the window built in two branches):
    # the training map runs this for every image.
    is_jpeg = tf.io.is_jpeg(encoded)
    whole = tf.cond(
        is_jpeg, lambda: tf.zeros([0, 0, 3], tf.uint8), lambda: crops.decode_image(encoded)
    )
    if callable(window):
        shape = tf.cond(
            is_jpeg, lambda: tf.image.extract_jpeg_shape(encoded), lambda: tf.shape(whole)
        )
        window = window(shape)
    window = tf.cast(window, tf.int32)
    image = tf.cond(
        is_jpeg,
        lambda: tf.image.decode_and_crop_jpeg(encoded, window, channels=3),
        lambda: tf.slice(whole, [window[0], window[1], 0], [window[2], window[3], 3]),
    )
    image.set_shape([None, None, 3])
    return image


def random_resized_crop(
    encoded,
    seed,
    image_size=224,
    area_range=AREA_RANGE,
    aspect_ratio_range=ASPECT_RATIO_RANGE,
    max_attempts=MAX_ATTEMPTS,
):
    """Random-resized crop of an encoded image: float32 `[image_size, image_size, 3]` in [0, 255].

    The window comes from `sample_crop_window` on the image's shape, only that
    window is decoded (JPEG), and it is resized (bilinear) to `image_size`.

    >>> import numpy as np, tensorflow as tf
    >>> jpeg = tf.io.encode_jpeg(np.zeros((375, 500, 3), np.uint8))
    >>> random_resized_crop(jpeg, seed=[0, 0], image_size=64).shape
    TensorShape([64, 64, 3])
    """
    image = decode_and_crop(
        encoded,
        lambda shape: sample_crop_window(
            shape,
            seed,
            area_range=area_range,
            aspect_ratio_range=aspect_ratio_range,
            max_attempts=max_attempts,
        ),
    )
    # Bilinear weights are convex and the crop is uint8: already in [0, 255], no clip needed.
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image.set_shape([image_size, image_size, 3])
    return image


def pad_crop_flip(image, seed, pad=4, fill=0.0, flip=True):
    """Pads `pad` pixels of `fill` on each side, random-crops back to the input size, random h-flip.

    `fill` is a scalar or a per-channel value in the image's units: pass the
    dataset's mean pixel so the padding becomes 0 after the model's mean/std
    normalisation (fb.resnet.torch normalises, then zero-pads). Returns float32.
    """
    image = tf.cast(image, tf.float32)
    fill = tf.cast(fill, tf.float32)
    shape = tf.shape(image)
    crop_seed, flip_seed = split_seed(seed, 2)
    padded = tf.pad(image - fill, [[pad, pad], [pad, pad], [0, 0]]) + fill
    offsets = tf.random.stateless_uniform(
        [2], crop_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    image_out = tf.slice(padded, [offsets[0], offsets[1], 0], shape)
    if flip:
        image_out = tf.image.stateless_random_flip_left_right(image_out, flip_seed)
    return image_out


def _grayscale(image):
    return tf.reduce_sum(image * tf.constant(_LUMA, image.dtype), axis=-1, keepdims=True)


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.4):
    """fb.resnet.torch `ColorJitter`: brightness, contrast, saturation in random order.

    Each blends the image with a reference (black, the mean gray level, the
    grayscale image) by a factor `1 + U(-s, s)`. `image` is float in [0, 255].
    """
    image = tf.cast(image, tf.float32)
    order_seed, alpha_seed = split_seed(seed, 2)
    strengths = tf.constant([brightness, contrast, saturation], tf.float32)
    alphas = 1.0 + strengths * tf.random.stateless_uniform([3], alpha_seed, -1.0, 1.0)
    order = tf.argsort(tf.random.stateless_uniform([3], order_seed))

    def blend(reference, alpha):
        return lambda: image * alpha + reference * (1.0 - alpha)

    for k in range(3):
        op = order[k]
        alpha = tf.gather(alphas, op)
        gray = _grayscale(image)
        image = tf.switch_case(
            op,
            [
                blend(tf.zeros_like(gray), alpha),  # brightness
                blend(tf.reduce_mean(gray), alpha),  # contrast
                blend(gray, alpha),  # saturation
            ],
        )
    return image


def lighting(image, seed, alphastd=0.1, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC):
    """AlexNet PCA lighting noise (fb.resnet.torch `Lighting`) on float pixels in [0, 255]."""
    alpha = tf.random.stateless_normal([3], seed, stddev=alphastd)
    eigvec = tf.constant(eigvec, tf.float32)
    rgb = tf.linalg.matvec(eigvec, alpha * tf.constant(eigval, tf.float32)) * 255.0
    return tf.cast(image, tf.float32) + rgb


def color_augment(image, seed):
    """`color_jitter` (0.4, 0.4, 0.4) then `lighting` (alphastd 0.1), clipped to [0, 255]."""
    jitter_seed, light_seed = split_seed(seed, 2)
    image = color_jitter(image, jitter_seed)
    image = lighting(image, light_seed)
    return tf.clip_by_value(image, 0.0, 255.0)
