"""The source registry of keras_preact.data: a new dataset is one source definition + one line.

Each test defines a small source as a file in `keras_preact/data/sources/`
would, registers it with the one registry line (`monkeypatch.setitem` undoes
it afterwards), and reads it through the public `make_dataset` and
`dataset_info`.
"""

import functools
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_preact.data import (
    DATASETS,
    augment,
    dataset_info,
    make_dataset,
    pipeline,
    reset_skipped_images,
    skipped_images,
    sources,
)
from keras_preact.data.sources.base import DatasetInfo, Source

# ---------------------------------------------------------------- a dataset held in memory

TINY_SIZES = {"train": 6, "test": 4}


def _tiny_arrays(split):
    """Image i is a flat grey of value 10 * i (+ 100 for test); label i % 3."""
    offset = 100 if split == "test" else 0
    values = offset + 10 * np.arange(TINY_SIZES[split])
    images = np.broadcast_to(values[:, None, None, None], (len(values), 8, 8, 3))
    return images.astype(np.uint8), (np.arange(len(values)) % 3).astype(np.int64)


def _tiny_info(data_dir=None):
    return DatasetInfo(
        name="tiny",
        num_classes=3,
        image_size=8,
        normalization="torch",
        class_names=("a", "b", "c"),
        num_examples=dict(TINY_SIZES),
    )


# Training augmentation: a one-pixel random shift into white padding.
_SHIFT = functools.partial(augment.pad_crop_flip, pad=1, fill=255.0, flip=False)


def _tiny_read(split, request):
    ds = tf.data.Dataset.from_tensor_slices(_tiny_arrays(split))
    return pipeline.Raw(ds, shuffle_buffer=TINY_SIZES[split], augment=_SHIFT)


TINY = Source("tiny", _tiny_info, _tiny_read, splits=tuple(TINY_SIZES), fixed_size=8)


def _one_pass(ds):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(images), np.concatenate(labels)


def test_registry_is_the_list_of_datasets():
    assert DATASETS == tuple(sources.SOURCES)
    assert all(name == source.name for name, source in sources.SOURCES.items())
    for name in DATASETS:
        if name != "folder":  # needs a data_dir
            assert dataset_info(name).name == name
    photos = [name for name, source in sources.SOURCES.items() if source.photos]
    assert photos == ["imagenet2012", "folder", "tfrecord"]


def test_one_source_and_one_registry_line_add_a_dataset(monkeypatch):
    with pytest.raises(ValueError, match="Unknown dataset 'tiny'"):
        dataset_info("tiny")
    monkeypatch.setitem(sources.SOURCES, TINY.name, TINY)  # the registry line

    assert dataset_info("tiny") == _tiny_info()
    # Evaluation: the stored images and labels, in order, as float32 / int32.
    images, labels = _one_pass(make_dataset("tiny", "test", batch_size=3))
    expected_images, expected_labels = _tiny_arrays("test")
    np.testing.assert_array_equal(images, expected_images.astype(np.float32))
    np.testing.assert_array_equal(labels, expected_labels)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    # Training: shuffled and augmented (shifted by one pixel into the 255 padding), seeded.
    train = [_one_pass(make_dataset("tiny", "train", batch_size=2, seed=s)) for s in (7, 7, 8)]
    np.testing.assert_array_equal(train[0][0], train[1][0])
    assert not np.array_equal(train[0][0], train[2][0])
    images, labels = train[0]
    values = images[:, 1:-1, 1:-1, 0].reshape(len(images), -1)
    assert np.all(values == values[:, :1])  # the inside of each crop is the source grey
    assert sorted(values[:, 0].tolist()) == [0, 10, 20, 30, 40, 50]
    assert np.all(labels == values[:, 0] // 10 % 3)  # labels travel with their images
    # The shared stages apply: sharding over input pipelines, repeat.
    shards = [
        _one_pass(
            make_dataset(
                "tiny", "test", batch_size=4, input_context=tf.distribute.InputContext(2, i, 2)
            )
        )[0][:, 0, 0, 0]
        for i in range(2)
    ]
    assert shards[0].tolist() == [100, 120] and shards[1].tolist() == [110, 130]
    stream = make_dataset("tiny", "train", batch_size=4, repeat=True, seed=0)
    assert len(list(stream.take(5))) == 5
    # The source's own checks, and the options it does not take.
    with pytest.raises(ValueError, match="Unknown split 'val' for 'tiny'. Allowed splits: train"):
        make_dataset("tiny", "val", batch_size=2)
    with pytest.raises(ValueError, match="tiny images are 8x8; got image_size=32"):
        make_dataset("tiny", "train", batch_size=2, image_size=32)
    with pytest.raises(ValueError, match="color_augment applies to the photo datasets"):
        make_dataset("tiny", "train", batch_size=2, color_augment=True)
    with pytest.raises(ValueError, match="Allowed names: digits, .*, tfrecord, tiny"):
        make_dataset("mnist", "train", batch_size=2)


# ---------------------------------------------------------------- a dataset of encoded photos


def _png(value, size=(40, 30)):
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _snaps_read(split, request, label_offset=None):
    """Three PNGs and one garbage element, stored with labels 1-based by default."""
    encoded = [_png(40), b"not an image", _png(80), _png(120)]
    offset = 1 if label_offset is None else label_offset
    return pipeline.Raw(
        tf.data.Dataset.from_tensor_slices((encoded, [1, 2, 3, 2])),
        shuffle_buffer=len(encoded),
        read_bytes=lambda x, label: (x, label - offset),
        num_classes=3,
    )


def test_a_registered_photo_source_gets_crops_skips_and_its_options(monkeypatch):
    snaps = Source(
        "snaps",
        lambda data_dir=None: DatasetInfo("snaps", 3, 16, "torch", ("x", "y", "z"), {"all": 4}),
        _snaps_read,
        splits=("all",),
        photos=True,
        options=("label_offset",),
    )
    monkeypatch.setitem(sources.SOURCES, snaps.name, snaps)
    reset_skipped_images()
    images, labels = _one_pass(make_dataset("snaps", "all", batch_size=4, eval_crop_size=24))
    assert images.shape == (3, 24, 24, 3) and labels.tolist() == [0, 2, 1]
    np.testing.assert_allclose(images[:, 0, 0, 0], [40, 80, 120], atol=1)
    assert skipped_images() == 1
    # Training: random-resized crops with colour noise; the option reaches the source.
    images, labels = _one_pass(
        make_dataset(
            "snaps",
            "all",
            batch_size=4,
            training=True,
            image_size=16,
            color_augment=True,
            label_offset=2,
            seed=0,
            drop_remainder=False,
        )
    )
    assert images.shape == (2, 16, 16, 3)  # the labels 3-2 = 1 and 2-2 = 0 are left
    assert (
        sorted(labels.tolist()) == [0, 1] and skipped_images() == 2
    )  # distinct images: the garbage one is in both
    with pytest.raises(ValueError, match="label_offset applies to tfrecord, snaps only"):
        make_dataset("digits", "train", batch_size=2, label_offset=1)
