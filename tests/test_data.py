"""Input pipelines (keras_preact.data) on real photos, tfds mock data and TF-official TFRecords.

The photos are scikit-learn's and scikit-image's bundled sample images,
re-encoded at ImageNet-like sizes; references are numpy/PIL computations and
exact counts.
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import stats

from keras_preact import preprocessing
from keras_preact.data import (
    DATASETS,
    MissingDataError,
    augment,
    crops,
    dataset_info,
    digits_arrays,
    make_dataset,
    reset_skipped_images,
    skipped_image_names,
    skipped_images,
)

# (source, size) per class; sizes are (width, height) like ImageNet photos.
PHOTOS = {
    "animal": [("chelsea", (500, 375)), ("astronaut", (375, 500)), ("coffee", (500, 333))],
    "scene": [("china", (500, 375)), ("flower", (375, 500)), ("hubble", (480, 360))],
    "thing": [("rocket", (500, 400)), ("camera", (400, 400)), ("retina", (420, 500))],
}
# Files in train/ that cannot be used: garbage bytes and a truncated JPEG.
NUM_BAD_TRAIN = 2
BAD_TRAIN = ("train/animal/truncated.jpg", "train/thing/garbage.jpg")


def _sample_photos():
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    photos = {"china": china, "flower": flower}
    for name in ("chelsea", "astronaut", "coffee", "rocket", "camera", "retina"):
        photos[name] = getattr(skdata, name)()
    photos["hubble"] = skdata.hubble_deep_field()
    return photos


def _encode(array, fmt, mode=None, **kwargs):
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _resized(array, size):
    image = Image.fromarray(array)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image.resize(size, Image.BICUBIC))


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """folder/train/<class>/*, folder/val/<class>/* of real photos in several formats.

    Returns (root, {relative path: (label, RGB array as written or None if bad)}).
    """
    root = tmp_path_factory.mktemp("photos")
    photos = _sample_photos()
    classes = sorted(PHOTOS)
    files = {}

    def write(rel, payload, label, array):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        files[rel] = (label, array)

    for label, class_name in enumerate(classes):
        for i, (source, size) in enumerate(PHOTOS[class_name]):
            array = _resized(photos[source], size)
            split = "val" if i == 2 else "train"
            write(
                f"{split}/{class_name}/{source}.jpg",
                _encode(array, "JPEG", quality=92),
                label,
                None,
            )
    # Other encodings of real photos, all in train/.
    chelsea = _resized(photos["chelsea"], (500, 375))
    china = _resized(photos["china"], (375, 500))
    write("train/animal/chelsea.png", _encode(chelsea, "PNG"), 0, chelsea)
    write("train/scene/china_gray.jpeg", _encode(china, "JPEG", "L"), 1, None)
    write("train/scene/china_cmyk.JPEG", _encode(china, "JPEG", "CMYK"), 1, None)
    write("train/thing/chelsea.bmp", _encode(chelsea[:300, :400], "BMP"), 2, None)
    write("train/thing/chelsea.gif", _encode(chelsea[:200, :300], "GIF"), 2, None)
    # Bad files: skipped and counted. A text file: ignored (not an image name).
    write("train/thing/garbage.jpg", b"\0" + os.urandom(2999), -1, None)  # no image signature
    write("train/animal/truncated.jpg", _encode(china, "JPEG")[:20000], -1, None)
    write("train/animal/notes.txt", b"not an image", -2, None)
    return root, files


def _one_pass(ds):
    images, labels = [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


# ---------------------------------------------------------------- API


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(ValueError, match="Allowed names: digits, synthetic, cifar10"):
        make_dataset("mnist", "train", batch_size=8)
    with pytest.raises(ValueError, match="Allowed names"):
        dataset_info("imagenet")
    with pytest.raises(ValueError, match="Allowed splits: train, test"):
        make_dataset("digits", "validation", batch_size=8)
    with pytest.raises(ValueError, match="32x32"):
        make_dataset("digits", "train", batch_size=8, image_size=64)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset("digits", "train", batch_size=0)
    assert set(DATASETS) == {
        "digits",
        "synthetic",
        "cifar10",
        "cifar100",
        "imagenet2012",
        "folder",
        "tfrecord",
    }


def test_dataset_info_facts():
    cifar100 = dataset_info("cifar100")
    assert (cifar100.num_classes, cifar100.image_size, cifar100.normalization) == (
        100,
        32,
        "cifar100",
    )
    assert len(cifar100.class_names) == 100 and cifar100.class_names == tuple(
        sorted(cifar100.class_names)
    )
    imagenet = dataset_info("imagenet2012")
    assert imagenet.class_names[1] == preprocessing.imagenet_classes()[1][0] == "n01443537"
    assert imagenet.num_examples == {"train": 1_281_167, "validation": 50_000}
    assert imagenet.normalization in preprocessing.NORMALIZATIONS
    with pytest.raises(dataclasses_frozen_error()):
        imagenet.num_classes = 3


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


# ---------------------------------------------------------------- digits / synthetic


def _upsample_digits(images):
    """The 8x8 digits (0..16) as 32x32 RGB in [0, 255], written out in numpy (float64).

    Bilinear interpolation with half-pixel centres, clamped at the borders (what
    `tf.image.resize(..., "bilinear")` computes): output pixel o samples the input at
    (o + 0.5) / 4 - 0.5.
    """
    source = np.clip((np.arange(32) + 0.5) / 4 - 0.5, 0, 7)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, 7)
    frac = source - low
    x = images.astype(np.float64) * 255.0 / 16.0
    rows = x[:, low, :] * (1 - frac)[:, None] + x[:, high, :] * frac[:, None]
    gray = rows[:, :, low] * (1 - frac) + rows[:, :, high] * frac
    return np.repeat(gray[..., None], 3, axis=-1)


def _digits_train_test_split(target):
    """The documented split: stratified 80/20, random_state 0 (indices into load_digits())."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(target))
    return train_test_split(indices, test_size=0.2, stratify=target, random_state=0)


def test_digits_split_statistics_and_order():
    from sklearn.datasets import load_digits

    digits = load_digits()
    train_x, train_y = digits_arrays("train")
    test_x, test_y = digits_arrays("test")
    assert (len(train_y), len(test_y)) == (1437, 360)
    # Stratified: every class is 20% +- 1 image of its total in the test split.
    totals = np.bincount(digits.target)
    assert np.all(np.abs(np.bincount(test_y) - 0.2 * totals) <= 1)
    # Pixels: 0..16 scaled to 0..255, upsampled, identical RGB channels.
    assert train_x.shape[1:] == (32, 32, 3) and 0 <= train_x.min() and train_x.max() <= 255
    np.testing.assert_array_equal(train_x[..., 0], train_x[..., 2])
    # The pixels and the "digits" normalisation against an independent recomputation.
    train, test = _digits_train_test_split(digits.target)
    upsampled = _upsample_digits(digits.images)
    np.testing.assert_allclose(train_x, upsampled[train], rtol=0, atol=1e-3)
    np.testing.assert_allclose(test_x, upsampled[test], rtol=0, atol=1e-3)
    mean, std = preprocessing.NORMALIZATIONS["digits"]
    expected_mean, expected_std = upsampled[train].mean(), upsampled[train].std()
    np.testing.assert_allclose(mean, [expected_mean] * 3, rtol=0, atol=6e-4)  # 3 decimals
    np.testing.assert_allclose(std, [expected_std] * 3, rtol=0, atol=6e-4)
    # Eval pipeline = the arrays in order.
    images, labels = _one_pass(make_dataset("digits", "test", batch_size=64))
    np.testing.assert_array_equal(labels, test_y)
    np.testing.assert_allclose(images, test_x)


def test_digits_training_is_shifted_not_flipped_and_seeded():
    image = digits_arrays("train")[0][7]
    padded = np.pad(image, [(2, 2), (2, 2), (0, 0)])
    candidates = [padded[dy : dy + 32, dx : dx + 32] for dy in range(5) for dx in range(5)]
    seen = set()
    for s in range(60):
        out = augment.pad_crop_flip(image, [s, 3], pad=2, fill=0.0, flip=False).numpy()
        match = [k for k, c in enumerate(candidates) if np.array_equal(out, c)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) >= 20  # the 25 shifts are all reachable

    def first_batches(seed):
        ds = make_dataset("digits", "train", batch_size=64, seed=seed)
        return [x.numpy() for x, _ in ds.take(2)]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # A second pass over the same dataset is reshuffled, reproducibly.
    ds = make_dataset("digits", "train", batch_size=1437, seed=5)
    ds2 = make_dataset("digits", "train", batch_size=1437, seed=5)
    e1, e2 = [y.numpy() for _, y in ds], [y.numpy() for _, y in ds]
    f1, f2 = [y.numpy() for _, y in ds2], [y.numpy() for _, y in ds2]
    assert not np.array_equal(e1[0], e2[0])
    np.testing.assert_array_equal(e1[0], f1[0])
    np.testing.assert_array_equal(e2[0], f2[0])
    assert sorted(e1[0]) == sorted(digits_arrays("train")[1])


def test_synthetic_is_seeded_and_shaped():
    def take(seed, **kw):
        ds = make_dataset(
            "synthetic",
            "train",
            batch_size=4,
            image_size=40,
            num_classes=7,
            num_examples=12,
            seed=seed,
            **kw,
        )
        return _one_pass(ds)

    (x1, y1), (x2, y2), (x3, _) = take(3), take(3), take(4)
    assert x1.shape == (12, 40, 40, 3) and x1.dtype == np.float32
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert 0 <= y1.min() and y1.max() < 7 and 0 <= x1.min() and x1.max() <= 255
    repeated = make_dataset("synthetic", "train", batch_size=5, num_examples=12, repeat=True)
    assert len(list(repeated.take(7))) == 7
    # Evaluation batches come at the eval crop size (224 and 320 evaluations differ).
    for crop in (24, 56):
        images, _ = _one_pass(
            make_dataset("synthetic", "test", batch_size=2, num_examples=2, eval_crop_size=crop)
        )
        assert images.shape == (2, crop, crop, 3)


# ---------------------------------------------------------------- sharding


def test_input_context_shards_are_disjoint_and_cover_the_data(photo_folder):
    root, _ = photo_folder
    shards = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        ds = make_dataset("digits", "test", batch_size=20, input_context=context)
        batches = list(ds)
        assert all(x.shape[0] == 10 for x, _ in batches)  # global 20 -> 10 per replica
        shards.append(np.concatenate([x.numpy() for x, _ in batches]))
    keys = [{row.tobytes() for row in shard.reshape(len(shard), -1)} for shard in shards]
    assert not keys[0] & keys[1]
    assert len(keys[0] | keys[1]) == len(
        {r.tobytes() for r in digits_arrays("test")[0].reshape(360, -1)}
    )
    # Photo folder: the two pipelines decode disjoint files.
    counts = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        ds = make_dataset(
            "folder",
            "val",
            data_dir=str(root),
            batch_size=2,
            eval_crop_size=32,
            input_context=context,
        )
        counts.append(_one_pass(ds)[0])
    assert len(counts[0]) + len(counts[1]) == 3
    assert not np.any([np.array_equal(a, b) for a in counts[0] for b in counts[1]])


# ---------------------------------------------------------------- photo folder


def test_folder_info_and_training_crops_skip_bad_files(photo_folder):
    root, files = photo_folder
    info = dataset_info("folder", data_dir=str(root))
    assert info.class_names == ("animal", "scene", "thing") and info.num_classes == 3
    train_files = [
        rel for rel, (label, _) in files.items() if rel.startswith("train/") and label >= -1
    ]
    # garbage.jpg is left out from its first bytes; truncated.jpg only shows when decoded.
    assert info.num_examples == {"train": len(train_files) - 1, "val": 3}
    good_labels = sorted(
        label for rel, (label, _) in files.items() if rel.startswith("train/") and label >= 0
    )
    reset_skipped_images()
    ds = make_dataset(
        "folder",
        "train",
        data_dir=str(root),
        batch_size=4,
        image_size=48,
        seed=1,
        drop_remainder=False,
    )
    images, labels = _one_pass(ds)
    assert images.shape == (len(good_labels), 48, 48, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 255 and images.std() > 10
    assert sorted(labels.tolist()) == good_labels
    bad_paths = sorted(str(root / rel) for rel in BAD_TRAIN)
    assert skipped_images() == NUM_BAD_TRAIN and skipped_image_names() == bad_paths
    again, _ = _one_pass(ds)  # a second pass: new crops, bad files skipped, not counted again
    assert skipped_images() == NUM_BAD_TRAIN and skipped_image_names() == bad_paths
    same, _ = _one_pass(
        make_dataset(
            "folder",
            "train",
            data_dir=str(root),
            batch_size=4,
            image_size=48,
            seed=1,
            drop_remainder=False,
        )
    )
    np.testing.assert_array_equal(images, same)
    assert not np.array_equal(images, again)
    # Repeating stream: the bad files are recorded (once) as the stream moves past them.
    reset_skipped_images()
    n = len(good_labels)
    stream = make_dataset(
        "folder",
        "train",
        data_dir=str(root),
        batch_size=n,
        image_size=16,
        seed=2,
        repeat=True,
        color_augment=True,
    )
    for x, _ in stream.take(3):
        assert x.shape == (n, 16, 16, 3)
    assert skipped_image_names() == bad_paths


def _crop_error(reference, crop, top, left):
    size = crop.shape[0]
    window = reference[top : top + size, left : left + size]
    return np.abs(window - crop).mean() if window.shape == crop.shape else np.inf


def test_eval_crops_are_centred_and_deterministic(photo_folder):
    root, files = photo_folder
    val = sorted(rel for rel in files if rel.startswith("val/"))
    ds = make_dataset("folder", "val", data_dir=str(root), batch_size=2, eval_crop_size=224)
    images, labels = _one_pass(ds)
    images2, _ = _one_pass(ds)
    np.testing.assert_array_equal(images, images2)
    assert images.shape == (3, 224, 224, 3)
    assert labels.tolist() == [files[rel][0] for rel in val]
    for image, rel in zip(images, val):
        # PIL reference: shorter side to 256 (antialiased bilinear), then the centre 224.
        photo = Image.open(root / rel).convert("RGB")
        w, h = photo.size
        scale = 256 / min(w, h)
        size = (max(256, round(w * scale)), max(256, round(h * scale)))
        resized = np.asarray(photo.resize(size, Image.BILINEAR), np.float32)
        top, left = (size[1] - 224) // 2, (size[0] - 224) // 2
        errors = {
            (dy, dx): _crop_error(resized, image, top + dy, left + dx)
            for dy, dx in [(0, 0), (0, 4), (4, 0), (0, -4), (-4, 0)]
        }
        centred = errors.pop((0, 0))
        assert centred < 3.0, (rel, centred)
        assert all(centred < other for other in errors.values()), (rel, centred, errors)
    big = make_dataset("folder", "val", data_dir=str(root), batch_size=3, eval_crop_size=320)
    assert next(iter(big))[0].shape == (3, 320, 320, 3)


def _tf_crop_windows(shape, seeds):
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: augment.sample_crop_window(shape, s)
    )
    return np.stack(list(ds.as_numpy_iterator()))


def _numpy_crop_windows(
    height, width, n, rng, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), attempts=10
):
    """A numpy restatement of TF's SampleDistortedBoundingBox sampling (whole-image box)."""
    out = []
    for _ in range(n):
        for _ in range(attempts):
            ratio = rng.uniform(*aspect)
            min_area, max_area = area[0] * height * width, area[1] * height * width
            h = int(np.rint(np.sqrt(min_area / ratio)))
            max_h = int(np.rint(np.sqrt(max_area / ratio)))
            if np.rint(max_h * ratio) > width:
                max_h = int((width + 0.5 - 1e-7) / ratio)
            max_h = min(max_h, height)
            h = min(h, max_h)
            h += rng.integers(0, max_h - h + 1)
            w = int(np.rint(h * ratio))
            if w * h < min_area:
                h += 1
                w = int(np.rint(h * ratio))
            if w * h > max_area:
                h -= 1
                w = int(np.rint(h * ratio))
            if min_area <= w * h <= max_area and w <= width and h <= height and w * h >= 1:
                out.append((h, w))
                break
        else:
            side = int(min(height, width) * 224 / 256)
            out.append((side, side))
    return np.asarray(out)


def test_random_crop_area_and_aspect_distribution():
    height, width, n = 375, 500, 3000
    seeds = np.stack([np.arange(n), np.full(n, 11)], axis=1)
    windows = _tf_crop_windows([height, width, 3], seeds)
    top, left, h, w = windows.T
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + h <= height) and np.all(left + w <= width)
    area = h * w / (height * width)
    log_aspect = np.log(w / h)
    # Within the requested ranges (rounding to whole pixels aside) ...
    assert area.min() >= 0.08 - 1e-3 and area.max() <= 1.0
    assert np.all(np.abs(log_aspect) <= np.log(4 / 3) + 0.02)
    # ... and spanning them.
    assert np.quantile(area, 0.01) < 0.1 and area.max() > 0.95 and np.quantile(area, 0.99) > 0.8
    assert log_aspect.min() < np.log(0.78) and log_aspect.max() > np.log(1.28)
    # Same distribution as an independent numpy sampler of the documented algorithm.
    ref = _numpy_crop_windows(height, width, n, np.random.default_rng(0))
    ref_area = ref[:, 0] * ref[:, 1] / (height * width)
    ref_log_aspect = np.log(ref[:, 1] / ref[:, 0])
    assert stats.ks_2samp(area, ref_area).pvalue > 1e-3
    assert stats.ks_2samp(log_aspect, ref_log_aspect).pvalue > 1e-3
    # Centre offsets are uniform over the free space: mean relative offset ~ 0.5.
    free = height - h
    rel = top[free > 20] / free[free > 20]
    assert abs(rel.mean() - 0.5) < 0.03


def test_fused_crop_equals_decode_then_crop(photo_folder):
    root, files = photo_folder
    for rel in [
        "train/animal/chelsea.jpg",
        "train/animal/chelsea.png",
        "train/scene/china_cmyk.JPEG",
        "train/thing/chelsea.gif",
    ]:
        encoded = (root / rel).read_bytes()
        full = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
        for s in range(3):
            window = augment.sample_crop_window(full.shape, [s, 5]).numpy()
            top, left, h, w = window
            fused = augment.decode_and_crop(encoded, window).numpy()
            reference = full[top : top + h, left : left + w]
            assert fused.shape == reference.shape
            # Equal but for libjpeg's chroma upsampling at the window's edge pixels.
            diff = np.abs(fused.astype(int) - reference)
            assert (diff > 0).mean() < 0.005 and diff.mean() < 0.02, rel
            crop = augment.random_resized_crop(encoded, [s, 5], image_size=64).numpy()
            expected = tf.image.resize(reference, [64, 64]).numpy()
            assert np.abs(crop - expected).mean() < 0.05, rel
    # PNG written from an array: lossless, so the crop is exact.
    chelsea = files["train/animal/chelsea.png"][1]
    window = augment.sample_crop_window(chelsea.shape, [0, 0]).numpy()
    top, left, h, w = window
    np.testing.assert_array_equal(
        augment.decode_and_crop((root / "train/animal/chelsea.png").read_bytes(), window),
        chelsea[top : top + h, left : left + w],
    )


def test_truncated_and_garbage_are_corrupt_but_odd_formats_are_not(photo_folder):
    root, _ = photo_folder
    truncated = (root / "train/animal/truncated.jpg").read_bytes()
    # libjpeg decodes a crop in the intact part of a truncated file without error ...
    assert augment.decode_and_crop(truncated, [0, 0, 32, 32]).shape == (32, 32, 3)
    # ... so the pipeline's check rejects it by its missing end-of-image marker.
    with pytest.raises(tf.errors.InvalidArgumentError, match="Truncated JPEG"):
        augment.check_encoded_image(truncated)
    with pytest.raises(tf.errors.InvalidArgumentError):
        crops.decode_image((root / "train/thing/garbage.jpg").read_bytes())
    for rel in [
        "train/scene/china_gray.jpeg",
        "train/scene/china_cmyk.JPEG",
        "train/thing/chelsea.bmp",
    ]:
        encoded = augment.check_encoded_image((root / rel).read_bytes())
        assert augment.random_resized_crop(encoded, [1, 1], 32).shape == (32, 32, 3)


def test_color_augment_matches_fb_resnet_torch_formulas():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    gray = image @ np.array([0.299, 0.587, 0.114], np.float32)
    # Saturation only: out = gray + a * (image - gray) with one a in [0.6, 1.4].
    out = augment.color_jitter(image, [3, 4], brightness=0, contrast=0, saturation=0.4).numpy()
    a = (out - gray[..., None]) / (image - gray[..., None])
    assert np.ptp(a) < 1e-3 and 0.6 <= a.mean() <= 1.4 and abs(a.mean() - 1) > 1e-4
    # Brightness only: out = a * image.
    out = augment.color_jitter(image, [5, 6], brightness=0.4, contrast=0, saturation=0).numpy()
    assert np.ptp(out / image) < 1e-4
    # Contrast only: blend with the mean gray level.
    out = augment.color_jitter(image, [7, 8], brightness=0, contrast=0.4, saturation=0).numpy()
    a = (out - gray.mean()) / (image - gray.mean())
    assert np.ptp(a[np.abs(image - gray.mean()) > 5]) < 1e-3
    # Lighting: one RGB offset per image, eigvec @ (alpha * eigval) * 255 (alpha ~ N(0, 0.1)).
    offsets = np.stack(
        [(augment.lighting(image, [s, 0]).numpy() - image).reshape(-1, 3) for s in range(300)]
    )
    assert np.ptp(offsets, axis=1).max() < 1e-3
    eigvec, eigval = np.array(augment.IMAGENET_EIGVEC), np.array(augment.IMAGENET_EIGVAL)
    alphas = np.linalg.solve(eigvec, offsets[:, 0].T / 255).T / eigval
    assert abs(alphas.std() - 0.1) < 0.015 and abs(alphas.mean()) < 0.02


# ---------------------------------------------------------------- tensorflow-datasets (mocked)


def test_cifar_pipeline_on_tfds_mock_data():
    import tensorflow_datasets as tfds

    mean = np.array(preprocessing.NORMALIZATIONS["cifar10"][0], np.float32)
    with tfds.testing.mock_data(num_examples=6):
        source = list(tfds.builder("cifar10").as_dataset(split="train").as_numpy_iterator())
        images, labels = _one_pass(make_dataset("cifar10", "train", batch_size=3, seed=0))
        again, _ = _one_pass(make_dataset("cifar10", "train", batch_size=3, seed=0))
        test_source = list(tfds.builder("cifar10").as_dataset(split="test").as_numpy_iterator())
        test_images, test_labels = _one_pass(make_dataset("cifar10", "test", batch_size=4))
    np.testing.assert_array_equal(images, again)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.float32
    # Eval: the stored images, in order, untouched.
    np.testing.assert_array_equal(test_images, np.stack([ex["image"] for ex in test_source]))
    np.testing.assert_array_equal(test_labels, [ex["label"] for ex in test_source])
    # Train: every image is one of the 9x9 shifts (x 2 flips) of a source image padded with
    # the mean pixel (numpy reference), carrying that image's label.
    candidates, owners = [], []
    for j, ex in enumerate(source):
        canvas = np.broadcast_to(mean, (40, 40, 3)).copy()
        canvas[4:36, 4:36] = ex["image"]
        for dy in range(9):
            for dx in range(9):
                crop = canvas[dy : dy + 32, dx : dx + 32]
                candidates += [crop, crop[:, ::-1]]
                owners += [j, j]
    candidates = np.stack(candidates)
    matched = []
    for image, label in zip(images, labels):
        err = np.abs(candidates - image).reshape(len(candidates), -1).max(axis=1)
        best = int(np.argmin(err))
        assert err[best] < 1e-3
        assert label == source[owners[best]]["label"]
        matched.append(owners[best])
    assert sorted(matched) == list(range(6))  # one epoch = each image once
    # The padding is the mean pixel, i.e. 0 after the model's normalisation.
    pad_pixels = candidates[np.abs(candidates - mean).max(axis=-1) < 1e-4]
    assert np.abs(preprocessing.preprocess_input(pad_pixels, "cifar10")).max() < 1e-5


def test_cifar_crop_and_flip_are_uniform():
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3)).astype(np.float32)
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)], constant_values=-1.0)
    n = 900
    ds = tf.data.Dataset.range(n).map(lambda i: augment.pad_crop_flip(image, [i, 9], fill=-1.0))
    shifts = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in range(2)]
    references = np.stack(
        [padded[dy : dy + 32, dx : dx + 32][:, :: (-1 if f else 1)] for dy, dx, f in shifts]
    ).reshape(len(shifts), -1)
    counts = np.zeros((9, 9, 2), int)
    for out in ds.batch(100).as_numpy_iterator():
        equal = np.all(out.reshape(len(out), 1, -1) == references[None], axis=-1)
        assert np.all(equal.sum(axis=1) == 1)  # each output is exactly one shift/flip
        for k in np.argmax(equal, axis=1):
            counts[shifts[k]] += 1
    assert stats.chisquare(counts.sum(axis=(1, 2))).pvalue > 1e-3
    assert stats.chisquare(counts.sum(axis=(0, 2))).pvalue > 1e-3
    assert abs(counts[..., 1].sum() / n - 0.5) < 0.06


def test_imagenet2012_on_tfds_mock_jpegs():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=10):
        source = list(
            tfds.builder("imagenet2012")
            .as_dataset(split="validation", decoders={"image": tfds.decode.SkipDecoding()})
            .as_numpy_iterator()
        )
        train = make_dataset("imagenet2012", "train", batch_size=5, image_size=48, seed=3)
        images, labels = _one_pass(train)
        again, labels2 = _one_pass(
            make_dataset("imagenet2012", "train", batch_size=5, image_size=48, seed=3)
        )
        val_images, val_labels = _one_pass(
            make_dataset("imagenet2012", "validation", batch_size=4, eval_crop_size=64)
        )
    assert all(tf.io.is_jpeg(ex["image"]) for ex in source)  # real JPEG strings flowed
    assert images.shape == (10, 48, 48, 3) and 0 <= labels.min() and labels.max() < 1000
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, labels2)
    assert val_images.shape == (10, 64, 64, 3)
    np.testing.assert_array_equal(val_labels, [ex["label"] for ex in source])
    for image, ex in zip(val_images, source):
        photo = Image.open(io.BytesIO(ex["image"])).convert("RGB")
        w, h = photo.size
        resize = 73  # round(64 * 256 / 224)
        size = (
            max(resize, round(w * resize / min(w, h))),
            max(resize, round(h * resize / min(w, h))),
        )
        resized = np.asarray(photo.resize(size, Image.BILINEAR), np.float32)
        top, left = (size[1] - 64) // 2, (size[0] - 64) // 2
        assert _crop_error(resized, image, top, left) < 6.0


def test_missing_tfds_data_errors_say_where_and_how(tmp_path):
    with pytest.raises(MissingDataError) as error:
        make_dataset("cifar10", "train", batch_size=8, data_dir=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message and "download=True" in message
    assert isinstance(error.value, ValueError) and isinstance(error.value, FileNotFoundError)
    with pytest.raises(MissingDataError) as error:
        make_dataset("imagenet2012", "validation", batch_size=8, data_dir=str(tmp_path))
    message = str(error.value)
    manual = os.path.join(str(tmp_path), "downloads", "manual")
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert manual in message
    with pytest.raises(MissingDataError, match="missing: ILSVRC2012_img_train.tar"):
        make_dataset("imagenet2012", "train", batch_size=8, data_dir=str(tmp_path), download=True)


def test_missing_folder_errors_name_the_layout(tmp_path):
    with pytest.raises(MissingDataError, match=r"train/<class>/<image>"):
        make_dataset("folder", "train", batch_size=2, data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(MissingDataError, match="needs data_dir"):
        make_dataset("folder", "train", batch_size=2)
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.jpg").write_bytes(_encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "y.JPEG").write_bytes(b"flat ImageNet val layout")
    with pytest.raises(MissingDataError, match="sort them into <class>/ folders"):
        make_dataset("folder", "val", batch_size=2, data_dir=str(tmp_path))
    (tmp_path / "val" / "b").mkdir()
    with pytest.raises(ValueError, match="class folders that train/ lacks: b"):
        make_dataset("folder", "val", batch_size=2, data_dir=str(tmp_path))


# ---------------------------------------------------------------- TF-official TFRecords


def _tf_official_example(encoded, label, synset=None):
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    if synset is not None:
        feature["image/class/synset"] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[synset.encode()])
        )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def tfrecord_dir(photo_folder, tmp_path_factory):
    """TF-official layout: train-0000k-of-00002 (one corrupt image), validation-00000-of-00001.

    Class k of the photo folder is ImageNet class 100 * k + 7, stored 1-based with its synset.
    Returns (directory, expected 0-based train labels of the good images, validation labels).
    """
    root, files = photo_folder
    out = tmp_path_factory.mktemp("tfrecord")
    wnids = [wnid for wnid, _ in preprocessing.imagenet_classes()]
    records = {"train": [], "validation": []}
    good = {"train": [], "validation": []}
    for rel, (label, _) in sorted(files.items()):
        if label < 0 or not rel.lower().endswith((".jpg", ".jpeg")):
            continue
        split = "train" if rel.startswith("train/") else "validation"
        index = 100 * label + 7
        records[split].append(
            _tf_official_example((root / rel).read_bytes(), index + 1, wnids[index])
        )
        good[split].append(index)
    records["train"].insert(2, _tf_official_example(b"\xff\xd8 garbage", 108, wnids[107]))
    shards = [records["train"][::2], records["train"][1::2]]
    for k, shard in enumerate(shards):
        with tf.io.TFRecordWriter(str(out / f"train-{k:05d}-of-00002")) as writer:
            for record in shard:
                writer.write(record)
    with tf.io.TFRecordWriter(str(out / "validation-00000-of-00001")) as writer:
        for record in records["validation"]:
            writer.write(record)
    return out, good["train"], good["validation"]


def test_tfrecord_pipeline_labels_skips_and_shards(tfrecord_dir):
    from keras_preact.data.sources.tfrecord import tfrecord_files, tfrecord_label_offset

    directory, train_labels, val_labels = tfrecord_dir
    assert tfrecord_label_offset(tfrecord_files(str(directory), "train")) == 1
    reset_skipped_images()
    ds = make_dataset(
        "tfrecord",
        "train",
        data_dir=str(directory),
        batch_size=4,
        image_size=32,
        seed=0,
        drop_remainder=False,
    )
    images, labels = _one_pass(ds)
    assert images.shape == (len(train_labels), 32, 32, 3)
    assert sorted(labels.tolist()) == sorted(train_labels)
    # The garbage record is the second of the first shard file.
    assert skipped_image_names() == [f"record 1 of {directory / 'train-00000-of-00002'}"]
    val_images, got_val = _one_pass(
        make_dataset(
            "tfrecord", "validation", data_dir=str(directory), batch_size=2, eval_crop_size=40
        )
    )
    assert val_images.shape == (len(val_labels), 40, 40, 3) and got_val.tolist() == val_labels
    # Two input pipelines read disjoint shard files and together see every record.
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        shard = make_dataset(
            "tfrecord",
            "train",
            data_dir=str(directory),
            batch_size=2,
            image_size=16,
            input_context=context,
            drop_remainder=False,
        )
        seen.append(_one_pass(shard)[1].tolist())
    assert sorted(seen[0] + seen[1]) == sorted(train_labels)
    assert seen[0] and seen[1]


def test_tfrecord_label_offset_rule(tmp_path):
    jpeg = _encode(np.full((40, 50, 3), 90, np.uint8), "JPEG")
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as writer:
        for label in (0, 5, 999):  # 0-based, no synset
            writer.write(_tf_official_example(jpeg, label))
    with pytest.raises(ValueError, match="label_offset=0"):
        make_dataset("tfrecord", "train", data_dir=str(tmp_path), batch_size=3)
    ds = make_dataset(
        "tfrecord", "train", data_dir=str(tmp_path), batch_size=3, label_offset=0, training=False
    )
    assert sorted(_one_pass(ds)[1].tolist()) == [0, 5, 999]
    with pytest.raises(MissingDataError, match=r"validation-\*"):
        make_dataset("tfrecord", "validation", data_dir=str(tmp_path), batch_size=3)
    with pytest.raises(ValueError, match="label_offset applies to tfrecord only"):
        make_dataset("folder", "train", data_dir=str(tmp_path), batch_size=3, label_offset=1)
