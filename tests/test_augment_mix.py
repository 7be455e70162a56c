"""Training augmentations with timm's semantics: MixUp/CutMix, random erasing, RandAugment.

The RandAugment ops are compared with PIL's (what timm's ops call), the
argument of each computed with timm's level -> argument functions
(`timm/data/auto_augment.py`, written out here).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from keras_preact.data import Augmentation, make_dataset
from keras_preact.data import randaugment as ra
from keras_preact.data.augmentations import mix_batch, rand_augment, random_erasing

# --- MixUp / CutMix ---------------------------------------------------------------


def _constant_batch(values, size=(24, 32)):
    """A batch of constant images, image i filled with values[i]."""
    values = tf.constant(values, tf.float32)
    return values[:, None, None, None] * tf.ones([len(values), *size, 3])


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_labels_are_the_pasted_area_from_the_flipped_partner(seed):
    values = [0.0, 60.0, 130.0, 255.0]
    images = _constant_batch(values)
    mixed, soft = mix_batch(images, [0, 1, 2, 3], [seed, 7], 0.0, 1.0, num_classes=5)
    mixed, soft = mixed.numpy(), soft.numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    # One box for the batch, pasted from image batch-1-i.
    pasted = mixed[0, ..., 0] == values[3]
    rows, cols = np.nonzero(pasted)
    if rows.size:  # the pasted pixels form one rectangle
        assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    fraction = pasted.mean()
    for i in range(4):
        partner = 3 - i
        assert set(np.unique(mixed[i])) <= {values[i], values[partner]}
        np.testing.assert_array_equal(mixed[i, ..., 0] == values[partner], pasted | (i == partner))
        if i != partner:
            np.testing.assert_allclose(soft[i, partner], fraction, atol=1e-6)
            np.testing.assert_allclose(soft[i, i], 1.0 - fraction, atol=1e-6)
    assert soft[:, 4].max() == 0.0


def test_cutmix_box_is_clipped_and_lambda_corrected():
    """timm centres the box anywhere and clips it: some boxes are cut by the border."""
    images = _constant_batch([0.0, 255.0], size=(20, 20))
    touching = 0
    for seed in range(20):
        mixed, soft = mix_batch(images, [0, 1], [seed, 1], 0.0, 1.0, num_classes=2)
        pasted = mixed.numpy()[0, ..., 0] == 255.0
        np.testing.assert_allclose(soft.numpy()[0, 1], pasted.mean(), atol=1e-6)
        touching += bool(pasted[0].any() or pasted[-1].any() or pasted[:, 0].any())
    assert touching > 0


@pytest.mark.parametrize("seed", range(3))
def test_mixup_images_are_lam_x_plus_one_minus_lam_flipped(seed):
    images = tf.random.stateless_uniform([4, 8, 8, 3], [seed, 3], maxval=255.0)
    labels = [2, 0, 1, 2]
    mixed, soft = mix_batch(images, labels, [seed, 4], 1.0, 0.0, num_classes=3)
    soft = soft.numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    lam = soft[1, 0]  # image 1 (label 0) mixed with image 2 (label 1)
    assert 0.0 < lam < 1.0
    expected = lam * images.numpy() + (1.0 - lam) * images.numpy()[::-1]
    np.testing.assert_allclose(mixed.numpy(), expected, atol=1e-3)
    np.testing.assert_allclose(soft[0], [0.0, 0.0, 1.0], atol=1e-6)  # 2 with 2


def test_switch_prob_picks_cutmix_or_mixup():
    images = _constant_batch([0.0, 255.0])
    for seed in range(5):
        cut, _ = mix_batch(images, [0, 1], [seed, 0], 1.0, 1.0, switch_prob=1.0, num_classes=2)
        assert set(np.unique(cut.numpy())) <= {0.0, 255.0}
        mix, soft = mix_batch(images, [0, 1], [seed, 0], 1.0, 1.0, switch_prob=0.0, num_classes=2)
        np.testing.assert_allclose(mix.numpy()[0], 255.0 * soft.numpy()[0, 1], rtol=1e-5)


def test_mixing_is_seeded():
    images = tf.random.stateless_uniform([4, 8, 8, 3], [0, 0], maxval=255.0)
    runs = [mix_batch(images, [0, 1, 2, 3], s, 0.8, 1.0, num_classes=4) for s in ([1, 2], [1, 2])]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    lams = {
        float(mix_batch(images, [0, 1, 2, 3], [s, 2], 0.8, 1.0, num_classes=4)[1][0, 3])
        for s in range(5)
    }
    assert len(lams) > 1


# --- random erasing -------------------------------------------------------------------


def test_random_erasing_fills_one_box_with_mean_plus_std_noise():
    mean, std = (100.0, 120.0, 140.0), (10.0, 20.0, 30.0)
    fills = []
    for seed in range(20):
        out = random_erasing(tf.zeros([40, 48, 3]), [seed, 5], 1.0, mean, std).numpy()
        erased = (out != 0).any(axis=-1)
        rows, cols = np.nonzero(erased)
        assert rows.size, "p=1 erases (the box fits in 10 tries)"
        box = erased[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # one rectangle
        assert 0.015 <= erased.mean() <= 0.36  # 2%..1/3 of the area, up to rounding of the sides
        fills.append(out[erased])
    fills = np.concatenate(fills)
    np.testing.assert_allclose(fills.mean(axis=0), mean, rtol=0.02)
    np.testing.assert_allclose(fills.std(axis=0), std, rtol=0.1)


def test_random_erasing_probability():
    image = tf.random.stateless_uniform([16, 16, 3], [0, 0], maxval=255.0)
    for seed in range(5):
        np.testing.assert_array_equal(random_erasing(image, [seed, 0], 0.0), image)
    erased = [
        bool(tf.reduce_any(random_erasing(image, [seed, 1], 0.5) != image)) for seed in range(60)
    ]
    assert 0.3 < np.mean(erased) < 0.7


# --- RandAugment ----------------------------------------------------------------------


def _photo(seed=0, shape=(24, 30, 3)):
    """A random uint8 image of middling contrast (so autocontrast and equalize change it)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(120, 30, shape), 20, 220).astype(np.uint8)


def _enhance(level, sign):  # timm's _enhance_increasing_level_to_arg
    return max(0.1, 1.0 + sign * level / 10.0 * 0.9)


def _solarize_add(image, add):  # timm's solarize_add
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return image.point(lut * 3)


def _posterize(image, bits):  # PIL 13 refuses 0 bits; older PIL (and ours) keep none
    return ImageOps.posterize(image, bits) if bits else Image.new("RGB", image.size)


_AFFINE = dict(resample=Image.BILINEAR, fillcolor=(128, 128, 128))  # timm: _FILL

# name -> PIL result of timm's op at (level, sign), the level -> argument as timm's.
PIL_OPS = {
    "AutoContrast": lambda im, level, sign: ImageOps.autocontrast(im),
    "Equalize": lambda im, level, sign: ImageOps.equalize(im),
    "Invert": lambda im, level, sign: ImageOps.invert(im),
    "PosterizeIncreasing": lambda im, level, sign: _posterize(im, 4 - int(level / 10 * 4)),
    "SolarizeIncreasing": lambda im, level, sign: ImageOps.solarize(
        im, 256 - min(256, int(level / 10 * 256))
    ),
    "SolarizeAdd": lambda im, level, sign: _solarize_add(im, min(128, int(level / 10 * 110))),
    "ColorIncreasing": lambda im, lv, s: ImageEnhance.Color(im).enhance(_enhance(lv, s)),
    "ContrastIncreasing": lambda im, lv, s: ImageEnhance.Contrast(im).enhance(_enhance(lv, s)),
    "BrightnessIncreasing": lambda im, lv, s: ImageEnhance.Brightness(im).enhance(_enhance(lv, s)),
    "SharpnessIncreasing": lambda im, lv, s: ImageEnhance.Sharpness(im).enhance(_enhance(lv, s)),
    "Rotate": lambda im, level, sign: im.rotate(sign * level / 10 * 30, **_AFFINE),
    "ShearX": lambda im, level, sign: im.transform(
        im.size, Image.AFFINE, (1, sign * level / 10 * 0.3, 0, 0, 1, 0), **_AFFINE
    ),
    "ShearY": lambda im, level, sign: im.transform(
        im.size, Image.AFFINE, (1, 0, 0, sign * level / 10 * 0.3, 1, 0), **_AFFINE
    ),
    "TranslateXRel": lambda im, level, sign: im.transform(
        im.size, Image.AFFINE, (1, 0, sign * level / 10 * 0.45 * im.size[0], 0, 1, 0), **_AFFINE
    ),
    "TranslateYRel": lambda im, level, sign: im.transform(
        im.size, Image.AFFINE, (1, 0, 0, 0, 1, sign * level / 10 * 0.45 * im.size[1]), **_AFFINE
    ),
}
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


# timm's _RAND_INCREASING_TRANSFORMS, in its order (the op drawn is an index into it).
TIMM_INCREASING = [
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
]


def test_the_op_set_is_timms_increasing_set():
    assert [name for name, _ in ra.OPS] == TIMM_INCREASING
    assert set(PIL_OPS) == set(TIMM_INCREASING)


@pytest.mark.parametrize("name", list(PIL_OPS))
def test_rand_augment_op_matches_pil(name):
    index = [n for n, _ in ra.OPS].index(name)
    for seed, level, sign in [(0, 9.0, 1.0), (1, 4.5, -1.0), (2, 10.0, -1.0), (3, 2.0, 1.0)]:
        photo = _photo(seed)
        ours = ra.apply_op(tf.constant(photo, tf.float32), index, level, sign).numpy()
        expected = np.asarray(PIL_OPS[name](Image.fromarray(photo), level, sign), np.float32)
        if name in GEOMETRIC:
            # PIL truncates its double-precision interpolation, ours float32: where the
            # exact value is an integer (weights 0.3 / 0.7), either may land one below.
            assert np.abs(ours - expected).max() <= 1.0
            assert (ours != expected).mean() < 0.05
        else:
            np.testing.assert_array_equal(ours, expected, err_msg=f"{name} {level} {sign}")


def test_geometric_ops_take_a_fill_of_whole_numbers_in_a_graph():
    """timm's `_FILL` is (128, 128, 128): ints, traced in a tf.function as tf.data traces."""
    ops = [op for _, op in ra.OPS if op in ra._GEOMETRIC]
    run = tf.function(lambda image: [op(image, 10.0, 1.0, fill=(0, 128, 255)) for op in ops])
    for out in run(tf.fill([6, 8, 3], 7.0)):
        assert out.dtype == tf.float32
        corner = out.numpy()[0, 0] if out.numpy()[0, 0, 1] == 128 else out.numpy()[-1, -1]
        assert corner.tolist() == [0.0, 128.0, 255.0]


def test_rand_augment_is_seeded_and_applies_each_op_half_the_time():
    image = tf.constant(_photo(5, (16, 16, 3)), tf.float32)
    augment = tf.function(lambda seed: rand_augment(image, seed, 2, 9, 0.5))
    first = augment(tf.constant([3, 4]))
    np.testing.assert_array_equal(first, augment(tf.constant([3, 4])))
    assert first.dtype == tf.float32 and first.shape == image.shape
    unchanged = [bool(tf.reduce_all(augment(tf.constant([s, 0])) == image)) for s in range(80)]
    assert 0.1 < np.mean(unchanged) < 0.45  # both ops skipped: 1/4
    np.testing.assert_array_equal(rand_augment(image + 0.3, [0, 0], num_ops=0), image)


def test_magnitude_is_sampled_and_clipped_like_timms():
    levels = np.array([float(ra.sample_level([s, 0], 9, 0.5)) for s in range(200)])
    assert levels.max() == 10.0 and levels.min() >= 0.0
    assert 8.8 < levels.mean() < 9.1 and 0.3 < levels.std() < 0.6
    assert float(ra.sample_level([0, 0], 12, 0.0)) == 10.0


# --- the pipeline and the arguments ---------------------------------------------------

EVERYTHING = Augmentation(
    randaugment=(2, 9, 0.5), random_erasing=0.5, mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=10
)


def _first_batch(**kwargs):
    ds = make_dataset("digits", "train", batch_size=8, seed=0, **kwargs)
    return [t.numpy() for t in next(iter(ds))]


def test_pipeline_with_augmentation_gives_soft_labels():
    images, labels = _first_batch(training=True, augmentation=EVERYTHING)
    assert images.shape == (8, 32, 32, 3) and labels.shape == (8, 10)
    assert labels.dtype == np.float32
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    again = _first_batch(training=True, augmentation=EVERYTHING)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(labels, again[1])
    plain = _first_batch(training=True)
    assert not np.array_equal(images, plain[0])


def test_pipeline_without_augmentation_is_unchanged():
    for training in (True, False):
        before = _first_batch(training=training)
        after = _first_batch(training=training, augmentation=None)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
        assert after[1].dtype == np.int32
    evaluated = _first_batch(training=False, augmentation=EVERYTHING)
    np.testing.assert_array_equal(evaluated[0], before[0])
    assert evaluated[1].dtype == np.int32


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(mixup_alpha=-1), "mixup_alpha must be >= 0, got -1."),
        (dict(cutmix_alpha=-0.5, num_classes=3), "cutmix_alpha must be >= 0"),
        (dict(switch_prob=1.5), "switch_prob must be <= 1"),
        (dict(random_erasing=2.0), "random_erasing must be <= 1"),
        (dict(randaugment=(2, 11, 0.5)), "randaugment magnitude must be <= 10"),
        (dict(randaugment=(2, 9)), "randaugment must be (num_ops, magnitude, magnitude_std)"),
        (dict(randaugment=(-1, 9, 0.5)), "randaugment num_ops"),
        (dict(mixup_alpha=0.2), "mixing needs num_classes"),
        (dict(num_classes=0), "num_classes must be a positive integer"),
        (dict(fill_std=(1.0, 2.0)), "fill_std must be 3 numbers"),
        (dict(fill_std=(1.0, -2.0, 1.0)), "fill_std must be >= 0"),
    ],
)
def test_bad_arguments_raise_in_their_words(kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Augmentation(**kwargs).validate()
    with pytest.raises(ValueError, match="mixup_alpha|cutmix|switch|erasing|randaug|num_cl|fill"):
        make_dataset("digits", "train", batch_size=8, augmentation=Augmentation(**kwargs))


def test_make_dataset_rejects_other_objects():
    with pytest.raises(ValueError, match="augmentation must be a keras_preact.data.Augmentation"):
        make_dataset("digits", "train", batch_size=8, augmentation={"mixup_alpha": 0.2})


def test_photo_pipeline_augments_after_the_crop(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        folder = tmp_path / "train" / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")

    def first(**kwargs):
        ds = make_dataset(
            "folder", "train", data_dir=str(tmp_path), batch_size=4, image_size=32, seed=0, **kwargs
        )
        return [t.numpy() for t in next(iter(ds))]

    aug = Augmentation(randaugment=(2, 9, 0.5), random_erasing=1.0, cutmix_alpha=1.0, num_classes=2)
    images, labels = first(augmentation=aug)
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 2)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    plain = first()
    np.testing.assert_array_equal(plain[0], first(augmentation=None)[0])
    assert plain[1].dtype == np.int32 and not np.array_equal(images, plain[0])
