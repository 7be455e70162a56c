"""`"digits"`: scikit-learn's bundled 8x8 digits (1,797 images, no download).

Upsampled to 32x32 RGB in [0, 255]; a fixed stratified 80/20 split ("train" /
"test"). Training: pad 2 with the black background + random 32x32 crop (no
flip).

>>> SOURCE.info().num_examples
{'train': 1437, 'test': 360}
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from keras_preact.data import augment, pipeline
from keras_preact.data.sources.base import DatasetInfo, Source

DIGITS_TEST_FRACTION = 0.2
DIGITS_RANDOM_STATE = 0
DIGITS_SIZE = 32
SPLITS = ("train", "test")


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """{split: (images float32 [N, 32, 32, 3] in [0, 255], labels int32 [N])}, computed once."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) * (255.0 / 16.0)  # pixel values 0..16
    images = tf.image.resize(images[..., None], [DIGITS_SIZE, DIGITS_SIZE], method="bilinear")
    images = np.repeat(np.clip(images.numpy(), 0.0, 255.0), 3, axis=-1)
    labels = digits.target.astype(np.int32)
    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_RANDOM_STATE,
    )
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def digits_arrays(split):
    """The digits split as numpy arrays `(images [N, 32, 32, 3] float32 in [0, 255], labels)`.

    >>> images, labels = digits_arrays("test")
    >>> images.shape, labels.shape
    ((360, 32, 32, 3), (360,))
    """
    SOURCE.check(split)
    return _digits_arrays()[split]


def _info(data_dir=None):
    arrays = _digits_arrays()
    return DatasetInfo(
        name="digits",
        num_classes=10,
        image_size=DIGITS_SIZE,
        normalization="digits",
        class_names=tuple(str(i) for i in range(10)),
        num_examples={split: len(arrays[split][1]) for split in SPLITS},
    )


def _read(split, request):
    images, labels = digits_arrays(split)
    return pipeline.Raw(
        tf.data.Dataset.from_tensor_slices((images, labels)),
        shuffle_buffer=len(labels),
        augment=functools.partial(augment.pad_crop_flip, pad=2, fill=0.0, flip=False),
    )


SOURCE = Source("digits", _info, _read, splits=SPLITS, fixed_size=DIGITS_SIZE)
