"""timm's RandAugment ("rand-m9-mstd0.5-inc1") in TensorFlow, one image at a time, stateless.

`rand_augment(image, seed, num_ops, magnitude, magnitude_std)` works as
`timm.data.auto_augment.rand_augment_transform` with the "increasing" op set
(`_RAND_INCREASING_TRANSFORMS`): `num_ops` times, an op drawn uniformly (with
replacement) from `OPS` is applied with probability 0.5, at a magnitude drawn
from N(magnitude, magnitude_std) clipped to [0, 10] (uniform on [0, magnitude]
when `magnitude_std` is inf), its argument negated with probability 0.5 where
timm negates (rotate, shear, translate and the enhance factors). Each op's
level -> argument function is timm's (`LEVEL_TO_ARG`).

The ops give PIL's results (what timm calls): the image is first rounded to
integers in [0, 255] (timm's ops see a uint8 PIL image), the pointwise ops
use PIL's lookup tables and its float32 blends truncated to integers
(`ImageEnhance`), Sharpness PIL's SMOOTH kernel with the border kept. The
geometric ops (Rotate, ShearX/Y, TranslateX/YRel) use PIL's affine matrices
(pixel centres at +0.5), bilinear (timm draws bilinear or bicubic at random):
Rotate through `ImageProjectiveTransformV3`, the shears and translations as
one 1-D resampling per row or column; outside points are filled with `fill`:
timm's default is (128, 128, 128) (`_FILL`); `timm.data.create_transform`
passes the normalisation mean instead, round(255 * mean).

>>> import tensorflow as tf
>>> image = tf.random.stateless_uniform([32, 32, 3], [0, 0], maxval=255.0)
>>> out = rand_augment(image, seed=[1, 2], num_ops=2, magnitude=9, magnitude_std=0.5)
>>> out.shape, out.dtype.name
(TensorShape([32, 32, 3]), 'float32')
"""

from __future__ import annotations

import math

import tensorflow as tf

from keras_preact.data.augment import split_seed

# timm's `_FILL`, the default fill of its geometric ops.
FILL = (128.0, 128.0, 128.0)
# timm's `_LEVEL_DENOM`: magnitudes run 0..10.
MAX_LEVEL = 10.0
# timm's per-op probability (rand_augment_transform's default `p`).
OP_PROB = 0.5


def _ints(image):
    return tf.cast(image, tf.int32)


# Measured for one 224x224x3 float32 image on one core (TensorFlow 2.21): `tf.where`
# (SelectV2) runs its broadcasting kernel even where the shapes agree, 0.42 ms
# against 0.04 ms for `Select`; arithmetic that broadcasts over the channels or
# columns runs its generic broadcasting kernel too (0.13-0.16 ms, against 0.04
# ms where only leading axes or scalars broadcast); `tf.broadcast_to` is fast.
# So the ops below broadcast with `tf.broadcast_to` first and select with `_select`.


def _select(condition, x, y):
    """`tf.where(condition, x, y)` for tensors of one shape, through the faster `Select` kernel."""
    return tf.raw_ops.Select(condition=condition, x=x, y=y)


def _like(values, image):
    """`values` (a scalar, or one per channel) broadcast to `image`'s shape."""
    return tf.broadcast_to(values, tf.shape(image))


def _lookup(image, lut):
    """Per-channel lookup: `lut` is [3, 256] (int or float); `image` holds integers 0..255."""
    flat = tf.reshape(tf.cast(lut, tf.float32), [-1])
    return tf.gather(flat, _ints(image) + _like(tf.constant([0, 256, 512]), image))


def _histograms(image):
    """[3, 256] int32 counts of each value in each channel."""
    indices = tf.reshape(_ints(image) + _like(tf.constant([0, 256, 512]), image), [-1])
    return tf.reshape(tf.math.bincount(indices, minlength=768, maxlength=768), [3, 256])


def _blend(degenerate, image, factor):
    """PIL's `Image.blend` of uint8 images: trunc(clip(degenerate + factor * (image - degenerate)))."""
    return tf.floor(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0))


def _grayscale(image, channels=1):
    """PIL's "L" conversion (ITU-R 601-2 in 16-bit fixed point), [h, w, channels] float32.

    One matrix product: the weighted sums of integers 0..255 stay below 2**24,
    so float32 holds them exactly.
    """
    weights = tf.tile(tf.constant([[19595.0], [38470.0], [7471.0]]), [1, channels])
    luma = tf.matmul(tf.reshape(image, [-1, 3]), weights) + 0x8000
    shape = tf.concat([tf.shape(image)[:2], [channels]], axis=0)
    return tf.reshape(tf.floor(luma / 65536.0), shape)


def auto_contrast(image, *_):
    """`ImageOps.autocontrast`: each channel's min..max stretched to 0..255.

    PIL's lookup table, `int(v * scale - lo * scale)` in float64 clipped to
    0..255, computed per pixel (faster than a gather from the table).
    """
    lo = tf.reduce_min(tf.reduce_min(image, axis=0), axis=0)  # two steps: faster than over [0, 1]
    hi = tf.reduce_max(tf.reduce_max(image, axis=0), axis=0)
    scale = 255.0 / tf.maximum(tf.cast(hi - lo, tf.float64), 1.0)
    values = tf.cast(image, tf.float64)
    offset = _like(tf.cast(lo, tf.float64) * scale, values)
    stretched = tf.clip_by_value(tf.floor(values * _like(scale, values) - offset), 0.0, 255.0)
    return _select(_like(hi > lo, image), tf.cast(stretched, tf.float32), image)


def equalize(image, *_):
    """`ImageOps.equalize`: PIL's per-channel histogram equalisation lookup table."""
    hist = _histograms(image)
    nonzero = hist > 0
    last = tf.reduce_max(tf.where(nonzero, tf.range(256)[None], 0), axis=1)
    step = (tf.reduce_sum(hist, axis=1) - tf.gather(hist, last, batch_dims=1)) // 255
    below = tf.cumsum(hist, axis=1, exclusive=True)
    lut = (step[:, None] // 2 + below) // tf.maximum(step[:, None], 1)
    keep = (tf.reduce_sum(tf.cast(nonzero, tf.int32), axis=1) <= 1) | (step == 0)
    lut = tf.where(keep[:, None], tf.range(256)[None], tf.minimum(lut, 255))
    return _lookup(image, lut)


def invert(image, *_):
    return 255.0 - image


def posterize(image, level, _sign):
    """PosterizeIncreasing: keeps 4 - int(level * 0.4) bits (`ImageOps.posterize`)."""
    bits = 4 - _ints(tf.floor(level / MAX_LEVEL * 4.0))
    mask = tf.bitwise.invert(tf.bitwise.left_shift(1, 8 - bits) - 1)
    return tf.cast(tf.bitwise.bitwise_and(_ints(image), mask), tf.float32)


def solarize(image, level, _sign):
    """SolarizeIncreasing: values >= 256 - int(level * 25.6) inverted (`ImageOps.solarize`)."""
    threshold = 256.0 - tf.minimum(256.0, tf.floor(level / MAX_LEVEL * 256.0))
    return _select(image < threshold, image, 255.0 - image)


def solarize_add(image, level, _sign):
    """SolarizeAdd: int(level * 11) (at most 128) added to the values below 128, clipped."""
    add = tf.minimum(128.0, tf.floor(level / MAX_LEVEL * 110.0))
    return _select(image < 128.0, tf.minimum(image + add, 255.0), image)


def _enhance_factor(level, sign):
    """timm's `_enhance_increasing_level_to_arg`: max(0.1, 1 +- 0.9 * level / 10)."""
    return tf.maximum(0.1, 1.0 + sign * level / MAX_LEVEL * 0.9)


def color(image, level, sign):
    """ColorIncreasing (`ImageEnhance.Color`): blend with the grayscale image."""
    return _blend(_grayscale(image, channels=3), image, _enhance_factor(level, sign))


def contrast(image, level, sign):
    """ContrastIncreasing (`ImageEnhance.Contrast`): blend with the mean gray level, rounded."""
    gray = tf.cast(_grayscale(image), tf.int64)
    count = tf.size(gray, out_type=tf.int64)
    mean = tf.cast((2 * tf.reduce_sum(gray) + count) // (2 * count), tf.float32)
    return _blend(mean, image, _enhance_factor(level, sign))


def brightness(image, level, sign):
    """BrightnessIncreasing (`ImageEnhance.Brightness`): blend with black."""
    return _blend(0.0, image, _enhance_factor(level, sign))


def sharpness(image, level, sign):
    """SharpnessIncreasing (`ImageEnhance.Sharpness`): blend with PIL's SMOOTH filter (border kept)."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]])
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    sums = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(tf.floor(sums / 13.0 + 0.5), [[1, 1], [1, 1], [0, 0]])
    inner = tf.pad(tf.ones_like(sums), [[1, 1], [1, 1], [0, 0]]) > 0
    return _blend(_select(inner, smooth, image), image, _enhance_factor(level, sign))


# The geometric ops are PIL's `Image.transform(AFFINE, (a, b, c, d, e, f))`,
# bilinear: output pixel centre (x + .5, y + .5) samples the input at
# (a, b, c; d, e, f) times it; a point outside the image gives `fill`, one
# inside is interpolated with the edge pixels repeated, and the result is
# truncated to an integer. In pixel-index coordinates (u, v) = (a x + b y + c',
# d x + e y + f') with c' = c + .5 (a + b) - .5 and f' = f + .5 (d + e) - .5.


def _with_fill(inside, image, fill):
    """`image` where `inside` ([h, w] bool), the 3 values of `fill` elsewhere."""
    return _select(
        _like(inside[..., None], image), image, _like(tf.constant(fill, image.dtype), image)
    )


def _inside(u, v, width, height):
    """PIL's test that the sampled point (u, v), in pixel-index coordinates, lies in the image."""
    return (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)


def _truncate(value):
    """PIL's truncation; + 1e-3: a value that is an integer in exact arithmetic
    (weights such as 0.3 / 0.7) comes out a hair below it in float32."""
    return tf.floor(value + 1e-3)


def _affine(image, matrix, fill):
    """PIL's transform by any `matrix` (see above), through `ImageProjectiveTransformV3`."""
    a, b, c, d, e, f = matrix
    c, f = c + 0.5 * (a + b) - 0.5, f + 0.5 * (d + e) - 0.5
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=tf.cast(tf.stack([a, b, c, d, e, f, 0.0, 0.0]), tf.float32)[None],
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )[0]
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    y, x = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
    inside = _inside(a * x + b * y + c, d * x + e * y + f, width, height)
    return _with_fill(inside, _truncate(out), fill)


def _shift_rows(image, offsets, fill):
    """PIL's transform (1, b, c, 0, 1, 0): row y samples u = x + offsets[y], a 1-D resampling.

    Each row gathers its pixels at the whole part of the shift (edge pixels
    repeated) and blends neighbours by the fractional part: `_affine`'s values
    (to float32 rounding), 4x faster than `ImageProjectiveTransformV3`, which
    computes every output value's coordinates in 2-D.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    offsets = offsets[:, None]  # [h, 1]
    whole = tf.floor(offsets)
    columns = tf.range(width + 1)[None] + tf.cast(whole, tf.int32)
    flat = tf.range(height)[:, None] * width + tf.clip_by_value(columns, 0, width - 1)
    samples = tf.gather(tf.reshape(image, [-1, 3]), flat)  # [h, w + 1, 3]
    left, right = samples[:, :-1], samples[:, 1:]
    out = _truncate(left + (right - left) * (offsets - whole)[..., None])
    u = tf.cast(tf.range(width), tf.float32)[None] + offsets
    return _with_fill(_inside(u, 0.0, tf.cast(width, tf.float32), 1.0), out, fill)


def _shift_columns(image, offsets, fill):
    """PIL's transform (1, 0, 0, d, 1, f): column x samples v = y + offsets[x] (`_shift_rows` transposed)."""
    return tf.transpose(_shift_rows(tf.transpose(image, [1, 0, 2]), offsets, fill), [1, 0, 2])


def _centres(image, axis):
    """The pixel centres along `axis`, 0.5, 1.5, ..."""
    return tf.cast(tf.range(tf.shape(image)[axis]), tf.float32) + 0.5


def rotate(image, level, sign, fill=FILL):
    """Rotate by +-3 * level degrees, counter-clockwise for positive, about the centre (`img.rotate`)."""
    angle = -sign * level / MAX_LEVEL * 30.0 * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    size = tf.cast(tf.shape(image), tf.float32)
    cx, cy = size[1] / 2.0, size[0] / 2.0
    matrix = (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)
    return _affine(image, matrix, fill)


def shear_x(image, level, sign, fill=FILL):
    """ShearX: (1, +-0.03 * level, 0, 0, 1, 0)."""
    return _shift_rows(image, sign * level / MAX_LEVEL * 0.3 * _centres(image, 0), fill)


def shear_y(image, level, sign, fill=FILL):
    """ShearY: (1, 0, 0, +-0.03 * level, 1, 0)."""
    return _shift_columns(image, sign * level / MAX_LEVEL * 0.3 * _centres(image, 1), fill)


def translate_x(image, level, sign, fill=FILL):
    """TranslateXRel: by +-0.045 * level of the width (content moves left for positive)."""
    pixels = sign * level / MAX_LEVEL * 0.45 * tf.cast(tf.shape(image)[1], tf.float32)
    return _shift_rows(image, tf.fill(tf.shape(image)[:1], pixels), fill)


def translate_y(image, level, sign, fill=FILL):
    pixels = sign * level / MAX_LEVEL * 0.45 * tf.cast(tf.shape(image)[0], tf.float32)
    return _shift_columns(image, tf.fill(tf.shape(image)[1:2], pixels), fill)


# timm's _RAND_INCREASING_TRANSFORMS, in its order: (name, op(image, level, sign[, fill])).
OPS = (
    ("AutoContrast", auto_contrast),
    ("Equalize", equalize),
    ("Invert", invert),
    ("Rotate", rotate),
    ("PosterizeIncreasing", posterize),
    ("SolarizeIncreasing", solarize),
    ("SolarizeAdd", solarize_add),
    ("ColorIncreasing", color),
    ("ContrastIncreasing", contrast),
    ("BrightnessIncreasing", brightness),
    ("SharpnessIncreasing", sharpness),
    ("ShearX", shear_x),
    ("ShearY", shear_y),
    ("TranslateXRel", translate_x),
    ("TranslateYRel", translate_y),
)
_GEOMETRIC = (rotate, shear_x, shear_y, translate_x, translate_y)


def sample_level(seed, magnitude, magnitude_std):
    """timm's per-call magnitude: N(magnitude, std) (uniform [0, magnitude] for inf) in [0, 10].

    >>> float(sample_level([0, 0], 9, 0.0))
    9.0
    """
    magnitude = tf.constant(float(magnitude), tf.float32)
    if magnitude_std == float("inf"):
        level = tf.random.stateless_uniform([], seed, 0.0, 1.0) * magnitude
    elif magnitude_std > 0:
        level = magnitude + magnitude_std * tf.random.stateless_normal([], seed)
    else:
        level = magnitude
    return tf.clip_by_value(level, 0.0, MAX_LEVEL)


def apply_op(image, index, level, sign, fill=FILL):
    """`OPS[index]` on `image` (integers 0..255, float32) at magnitude `level`, argument sign `sign`.

    >>> names = [name for name, _ in OPS]
    >>> float(apply_op(tf.fill([2, 2, 3], 100.0), names.index("Invert"), 9.0, 1.0)[0, 0, 0])
    155.0
    """

    def branch(op):
        if op in _GEOMETRIC:
            return lambda: op(image, level, sign, fill)
        return lambda: op(image, level, sign)

    level = tf.cast(level, tf.float32)
    sign = tf.cast(sign, tf.float32)
    return tf.switch_case(tf.cast(index, tf.int32), [branch(op) for _, op in OPS])


def _layer(image, seed, magnitude, magnitude_std, fill):
    """One of RandAugment's layers: a random op, applied with probability `OP_PROB`."""
    op_seed, apply_seed, level_seed, sign_seed = split_seed(seed, 4)
    index = tf.random.stateless_uniform([], op_seed, 0, len(OPS), dtype=tf.int32)
    apply = tf.random.stateless_uniform([], apply_seed) < OP_PROB
    level = sample_level(level_seed, magnitude, magnitude_std)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    out = tf.cond(apply, lambda: apply_op(image, index, level, sign, fill), lambda: image)
    out.set_shape(image.shape)
    return out


def rand_augment(image, seed, num_ops=2, magnitude=9, magnitude_std=0.5, fill=FILL):
    """timm's RandAugment of one float32 image in [0, 255] (see the module docstring).

    Returns float32 integers in [0, 255]; the same `seed` gives the same image.
    """
    image = tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, 255.0)
    for layer_seed in split_seed(seed, num_ops) if num_ops else []:
        image = _layer(image, layer_seed, magnitude, magnitude_std, fill)
    return image
