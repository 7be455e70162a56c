"""What a data source is: `Source`, plus the `DatasetInfo` and `MissingDataError` it reports.

A source module (one per dataset family, next to this file) defines a
`Source`: its name, its split names, `info(data_dir)` (a `DatasetInfo`) and
`read(split, request, **options)`, which returns the raw elements of one split
as a `pipeline.Raw`; `pipeline.finish` does the shared tf.data stages.

Example: a two-image dataset held in memory.

>>> import numpy as np, tensorflow as tf
>>> from keras_preact.data import pipeline
>>> def info(data_dir=None):
...     return DatasetInfo("tiny", 2, 4, "torch", ("dark", "light"), {"train": 2})
>>> def read(split, request):
...     images = np.stack([np.zeros([4, 4, 3], np.uint8), np.full([4, 4, 3], 255, np.uint8)])
...     return pipeline.Raw(tf.data.Dataset.from_tensor_slices((images, [0, 1])), shuffle_buffer=2)
>>> tiny = Source("tiny", info, read, splits=("train",), fixed_size=4)
>>> tiny.check("test")
Traceback (most recent call last):
ValueError: Unknown split 'test' for 'tiny'. Allowed splits: train.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


class MissingDataError(FileNotFoundError, ValueError):
    """The dataset is not where it was looked for; the message says how to provide it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a training loop needs to know about a dataset before reading it.

    `image_size` is the training crop size, `normalization` a key of
    `keras_preact.preprocessing.NORMALIZATIONS`, `num_examples` maps a split to
    its size (None when unknown without reading everything; for "folder", the
    number of image files less those known bad from their first bytes: a
    truncated one is counted, then skipped when read), `splits` lists
    the split names and `eval_split` is the one to evaluate on.

    >>> DatasetInfo("tiny", 2, 4, "torch", ("a", "b"), {"train": 2, "test": 1}).eval_split
    'test'
    """

    name: str
    num_classes: int
    image_size: int
    normalization: str
    class_names: tuple
    num_examples: dict
    splits: tuple = ("train", "test")
    eval_split: str = "test"


@dataclasses.dataclass(frozen=True)
class Source:
    """How `make_dataset` and `dataset_info` read one dataset (see the module docstring).

    Attributes:
      name: the dataset name `make_dataset(name, ...)` takes.
      info: `info(data_dir) -> DatasetInfo`.
      read: `read(split, request, **options) -> pipeline.Raw`, `request` a
        `pipeline.Request`; a missing dataset raises `MissingDataError`.
      splits: the split names `read` accepts, checked before it runs; None
        when any name will do or the data decides (an image folder).
      fixed_size: the only `image_size` the images come in (digits, CIFAR).
      photos: elements are encoded photos, so `color_augment` applies.
      options: the source-specific `make_dataset` keywords (`num_classes`,
        `num_examples`, `label_offset`) this source takes; they are passed on
        to `read`, and the sources without them reject them.
    """

    name: str
    info: Callable
    read: Callable
    splits: tuple | None = None
    fixed_size: int | None = None
    photos: bool = False
    options: tuple = ()

    def check(self, split, image_size=None):
        """Raises `ValueError` for a split this source lacks or an `image_size` it cannot give."""
        if self.splits is not None:
            check_split(self.name, split, self.splits)
        size = self.fixed_size
        if size is not None and image_size is not None and int(image_size) != size:
            raise ValueError(f"{self.name} images are {size}x{size}; got image_size={image_size}.")


def check_split(name, split, splits):
    """Raises `ValueError` naming the allowed splits unless `split` is one of `splits`.

    >>> check_split("digits", "train", ("train", "test"))
    """
    if split not in splits:
        raise ValueError(
            f"Unknown split {split!r} for {name!r}. Allowed splits: {', '.join(splits)}."
        )
