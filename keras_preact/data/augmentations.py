"""Training augmentations with timm's semantics: RandAugment, random erasing, MixUp/CutMix.

`Augmentation` holds the settings (`make_dataset(..., augmentation=...)`);
when training, the pipeline (`keras_preact.data.pipeline`) applies, per
image after the crop and flip, `rand_augment` (module `randaugment`) then
`random_erasing`, each from its own split of the element's seed; and per
batch (each replica's), before prefetching, `mix_batch`. All are stateless:
the same seed gives the same result.

* `random_erasing` is timm's `RandomErasing(mode="pixel")`, one box: area
  2%..1/3 of the image, log-uniform aspect ratio 0.3..3.3, up to 10 tries for
  a box that fits, filled with `fill_mean + fill_std * N(0, 1)` per pixel and
  channel. timm erases after normalising with N(0, 1); our images are pixels
  that the model normalises, so pass the normalisation's mean and std
  (`keras_preact.preprocessing.normalization_stats`) to get the same.
* `mix_batch` is timm's `Mixup(mode="batch", correct_lam=True)`: one lambda
  per batch from Beta(alpha, alpha); with both alphas, CutMix with
  probability `switch_prob`, else MixUp; image i is mixed with image
  batch-1-i (timm's flip); CutMix's lambda is the kept area. Labels become
  float32 soft labels; label smoothing is left to the loss.

Keras 3.15's layers are not used, for their semantics:

* `keras.layers.MixUp` / `CutMix`: a lambda per sample, not per batch, and a
  random permutation as partners; `CutMix` always keeps its box inside the
  image (timm's box is centred anywhere and clipped, the lambda corrected);
  neither switches between the two.
* `keras.layers.RandAugment`: 11 ops (no Invert, SolarizeAdd), with keras'
  own magnitudes (a random factor per op, not timm's level -> argument), no
  per-op probability 0.5 nor magnitude noise, the same ops for a whole batch,
  every op computed on every call and selected with `where`, and a stateful
  seed generator instead of one stateless seed per element.
* `keras.layers.RandomErasing`: the box's sides drawn independently (sqrt of
  a uniform scale each), not an area and log-uniform aspect ratio with
  retries; its noise fill is N(0, 1) * 255 clipped to the value range, not
  mean + std * N(0, 1).

>>> aug = Augmentation(randaugment=(2, 9, 0.5), random_erasing=0.25, mixup_alpha=0.8,
...                    cutmix_alpha=1.0, num_classes=10)
>>> aug.mixes, aug.validate() is None
(True, True)
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import tensorflow as tf

from keras_preact.data.augment import split_seed
from keras_preact.data.randaugment import rand_augment

__all__ = ["Augmentation", "mix_batch", "rand_augment", "random_erasing"]

# timm's RandomErasing defaults.
ERASE_AREA = (0.02, 1.0 / 3.0)
ERASE_ASPECT = (0.3, 1.0 / 0.3)
ERASE_ATTEMPTS = 10

# Stream ids folded into an element's seed, so that the augmentations draw apart
# from the crop and flip (which keep their seeds: without augmentation nothing changes).
_IMAGE_STREAM = 0x52414547
_BATCH_STREAM = 0x4D495845


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The training augmentations of `make_dataset`; the defaults turn everything off.

    Attributes:
      randaugment: (num_ops, magnitude, magnitude_std), e.g. (2, 9, 0.5) for
        timm's "rand-m9-mstd0.5-inc1"; None: off.
      random_erasing: probability per image (timm's `re_prob`).
      mixup_alpha, cutmix_alpha: Beta parameters; 0 turns each off.
      switch_prob: with both alphas > 0, CutMix's probability per batch.
      num_classes: the soft labels' size, needed when mixing.
      fill_mean, fill_std: the model's input normalisation, in pixel units
        (default: ImageNet's, as timm's): random erasing fills with
        `mean + std * N(0, 1)`, and RandAugment's rotations, shears and
        translations fill with `round(mean)` (timm's `create_transform`
        passes its `img_mean` there).

    >>> Augmentation(mixup_alpha=0.2).validate()
    Traceback (most recent call last):
    ...
    ValueError: mixing needs num_classes (the soft labels' size), got None.
    """

    randaugment: tuple | None = None
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    switch_prob: float = 0.5
    num_classes: int | None = None
    fill_mean: tuple = (123.675, 116.28, 103.53)
    fill_std: tuple = (58.395, 57.12, 57.375)

    @property
    def mixes(self):
        """Whether batches are mixed (MixUp or CutMix on), so labels are soft."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @property
    def per_image(self):
        """Whether anything is applied per image (RandAugment or random erasing)."""
        return self.randaugment is not None or self.random_erasing > 0

    def validate(self):
        """Raises ValueError, naming the argument, for a setting out of its range."""
        _check_randaugment(self.randaugment)
        _check_range("random_erasing", self.random_erasing, 0.0, 1.0)
        _check_range("mixup_alpha", self.mixup_alpha, 0.0, math.inf)
        _check_range("cutmix_alpha", self.cutmix_alpha, 0.0, math.inf)
        _check_range("switch_prob", self.switch_prob, 0.0, 1.0)
        for name in ("fill_mean", "fill_std"):
            value = getattr(self, name)
            if (
                not isinstance(value, (tuple, list))
                or len(value) != 3
                or not all(_is_real(v) for v in value)
            ):
                raise ValueError(f"{name} must be 3 numbers (one per channel), got {value!r}.")
        if min(self.fill_std) < 0:
            raise ValueError(f"fill_std must be >= 0, got {self.fill_std!r}.")
        if self.mixes and self.num_classes is None:
            raise ValueError("mixing needs num_classes (the soft labels' size), got None.")
        if self.num_classes is not None and not (
            isinstance(self.num_classes, numbers.Integral) and self.num_classes > 0
        ):
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}.")


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_range(name, value, low, high):
    if not _is_real(value) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if value < low:
        raise ValueError(f"{name} must be >= {low:g}, got {value!r}.")
    if value > high:
        raise ValueError(f"{name} must be <= {high:g}, got {value!r}.")


def _check_randaugment(value):
    if value is None:
        return
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(
            f"randaugment must be (num_ops, magnitude, magnitude_std) or None, got {value!r}."
        )
    num_ops, magnitude, magnitude_std = value
    if not isinstance(num_ops, numbers.Integral) or num_ops < 0:
        raise ValueError(f"randaugment num_ops must be an integer >= 0, got {num_ops!r}.")
    _check_range("randaugment magnitude", magnitude, 0.0, 10.0)
    _check_range("randaugment magnitude_std", magnitude_std, 0.0, math.inf)


def _erase_box(seed, height, width):
    """timm's box: up to `ERASE_ATTEMPTS` tries; (found, top, left, h, w) as int32 scalars."""
    area_seed, aspect_seed, top_seed, left_seed = split_seed(seed, 4)
    shape = [ERASE_ATTEMPTS]
    area = tf.random.stateless_uniform(shape, area_seed, *ERASE_AREA) * tf.cast(
        height * width, tf.float32
    )
    log_aspect = [math.log(r) for r in ERASE_ASPECT]
    aspect = tf.exp(tf.random.stateless_uniform(shape, aspect_seed, *log_aspect))
    # Python's round, as timm: half to even.
    h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (w < width) & (h < height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    h, w = h[first], w[first]
    top = tf.random.stateless_uniform([], top_seed, 0, height - h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], left_seed, 0, width - w + 1, dtype=tf.int32)
    return tf.reduce_any(fits), top, left, h, w


def random_erasing(image, seed, probability, fill_mean=(0.0, 0.0, 0.0), fill_std=(1.0, 1.0, 1.0)):
    """timm's `RandomErasing(probability, mode="pixel")` of one float32 image in pixel units.

    With probability `probability`, a box (2%..1/3 of the area, aspect ratio
    0.3..3.3, log-uniform; up to 10 tries to fit) is filled with `fill_mean +
    fill_std * N(0, 1)` per pixel and channel (not clipped: the model
    normalises it to N(0, 1), timm's fill).

    >>> out = random_erasing(tf.zeros([32, 32, 3]), [0, 1], 1.0, (100.0,) * 3, (0.0,) * 3)
    >>> float(tf.reduce_max(out))
    100.0
    """
    image = tf.cast(image, tf.float32)
    apply_seed, box_seed, noise_seed = split_seed(seed, 3)
    shape = tf.shape(image)
    found, top, left, h, w = _erase_box(box_seed, shape[0], shape[1])
    erase = (tf.random.stateless_uniform([], apply_seed) < probability) & found

    def erased():
        noise = tf.random.stateless_normal([h, w, shape[2]], noise_seed)
        noise = tf.constant(fill_mean, tf.float32) + tf.constant(fill_std, tf.float32) * noise
        return _paste(image, noise, top, left)

    out = tf.cond(erase, erased, lambda: image)
    out.set_shape(image.shape)
    return out


def augment_image(image, seed, augmentation):
    """`augmentation`'s per-image part: RandAugment, then random erasing (float32 out).

    `seed` is the element's seed; the two draw from their own splits of it.

    >>> aug = Augmentation(randaugment=(2, 9, 0.5), random_erasing=0.5)
    >>> augment_image(tf.zeros([8, 8, 3]), [0, 0], aug).shape
    TensorShape([8, 8, 3])
    """
    image = tf.cast(image, tf.float32)
    ra_seed, erase_seed = split_seed(
        tf.random.experimental.stateless_fold_in(seed, _IMAGE_STREAM), 2
    )
    if augmentation.randaugment is not None:
        fill = tuple(float(round(m)) for m in augmentation.fill_mean)
        image = rand_augment(image, ra_seed, *augmentation.randaugment, fill=fill)
    if augmentation.random_erasing > 0:
        image = random_erasing(
            image,
            erase_seed,
            augmentation.random_erasing,
            augmentation.fill_mean,
            augmentation.fill_std,
        )
    return image


def _paste(images, patch, top, left):
    """`images` (one [h, w, c] or a batch) with `patch` in place of the box at (`top`, `left`).

    The rows around the box are split off and concatenated back around the
    patch: 4x faster than `TensorStridedSliceUpdate` (0.07 against 0.25 ms
    for a 100x120 box in a 224x224x3 image on one core), and than padding the
    patch and selecting with a mask.

    >>> out = _paste(tf.zeros([3, 4, 1]), tf.ones([1, 2, 1]), 1, 2)
    >>> out[..., 0].numpy().astype(int).tolist()
    [[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]
    """
    rank = len(images.shape)
    row_axis = rank - 3  # 0 for one image, 1 for a batch
    shape, size = tf.shape(images), tf.shape(patch)
    height, width = size[row_axis], size[row_axis + 1]
    above, band, below = tf.split(
        images, [top, height, shape[row_axis] - top - height], axis=row_axis
    )
    before, _, after = tf.split(
        band, [left, width, shape[row_axis + 1] - left - width], axis=row_axis + 1
    )
    band = tf.concat([before, patch, after], axis=row_axis + 1)
    return tf.concat([above, band, below], axis=row_axis)


def _beta(seed, alpha):
    """One stateless draw of Beta(alpha, alpha), as X / (X + Y) of two Gamma(alpha) draws."""
    gammas = tf.random.stateless_gamma([2], seed, alpha=float(alpha))
    return gammas[0] / tf.maximum(gammas[0] + gammas[1], 1e-12)


def _cutmix_box(seed, lam, height, width):
    """timm's `rand_bbox`: (top, bottom, left, right), a box of sides sqrt(1 - lam) centred anywhere, clipped."""
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
    cy_seed, cx_seed = split_seed(seed, 2)
    cy = tf.random.stateless_uniform([], cy_seed, 0, height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], cx_seed, 0, width, dtype=tf.int32)
    top = tf.clip_by_value(cy - cut_h // 2, 0, height)
    bottom = tf.clip_by_value(cy + (cut_h + 1) // 2, 0, height)
    left = tf.clip_by_value(cx - cut_w // 2, 0, width)
    right = tf.clip_by_value(cx + (cut_w + 1) // 2, 0, width)
    return top, bottom, left, right


def _cutmix(images, seed, lam):
    """CutMix of `images` with their reverse; returns (images, lam corrected to the kept area).

    Only the box is reversed and pasted (not the whole batch reversed and
    selected with a mask).
    """
    shape = tf.shape(images)
    top, bottom, left, right = _cutmix_box(seed, lam, shape[1], shape[2])
    pasted = tf.reverse(images[:, top:bottom, left:right, :], [0])
    mixed = _paste(images, pasted, top, left)
    area = tf.cast((bottom - top) * (right - left), tf.float32)
    lam = 1.0 - area / tf.cast(shape[1] * shape[2], tf.float32)
    return mixed, lam


def mix_batch(images, labels, seed, mixup_alpha, cutmix_alpha, switch_prob=0.5, num_classes=None):
    """timm's batch-mode `Mixup` (mix_prob 1, correct_lam): (mixed images, float32 soft labels).

    Image i is mixed with image batch-1-i; one lambda per batch. Labels are
    int class ids `[batch]`; the soft labels, `[batch, num_classes]`, are
    lam * one_hot(labels) + (1 - lam) * one_hot(flipped labels).

    >>> images = tf.constant([0.0, 255.0])[:, None, None, None] * tf.ones([2, 4, 4, 3])
    >>> mixed, soft = mix_batch(images, [0, 1], [0, 0], 0.0, 1.0, num_classes=2)
    >>> float(tf.reduce_mean(mixed[0])) / 255 == float(soft[0, 1])
    True
    """
    images = tf.cast(images, tf.float32)
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    switch_seed, lam_seed, box_seed = split_seed(seed, 3)

    def cutmix():
        return _cutmix(images, box_seed, _beta(lam_seed, cutmix_alpha))

    def mixup():
        lam = _beta(lam_seed, mixup_alpha)
        return images * lam + tf.reverse(images, [0]) * (1.0 - lam), lam

    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], switch_seed) < switch_prob
        mixed, lam = tf.cond(use_cutmix, cutmix, mixup)
    elif cutmix_alpha > 0:
        mixed, lam = cutmix()
    elif mixup_alpha > 0:
        mixed, lam = mixup()
    else:
        mixed, lam = images, tf.constant(1.0)
    mixed.set_shape(images.shape)
    soft = one_hot * lam + tf.reverse(one_hot, [0]) * (1.0 - lam)
    return mixed, soft


def batch_seeds(element_seeds):
    """Per-batch seeds for `mix_batch`: a stream apart from the elements' seeds it is made from."""
    return element_seeds.map(
        lambda seed: tf.random.experimental.stateless_fold_in(seed, _BATCH_STREAM)
    )


def mix_batches(ds, seeds, augmentation):
    """`mix_batch` on each `(images, labels)` batch of `ds`, with the seeds of dataset `seeds`.

    >>> ds = tf.data.Dataset.from_tensors((tf.zeros([2, 4, 4, 3]), tf.constant([0, 1])))
    >>> seeds = tf.data.Dataset.from_tensors(tf.constant([0, 0], tf.int64)).repeat()
    >>> aug = Augmentation(mixup_alpha=1.0, num_classes=3)
    >>> next(iter(mix_batches(ds, seeds, aug)))[1].shape
    TensorShape([2, 3])
    """
    a = augmentation
    return tf.data.Dataset.zip(ds, seeds).map(
        lambda batch, seed: mix_batch(
            *batch, seed, a.mixup_alpha, a.cutmix_alpha, a.switch_prob, a.num_classes
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
