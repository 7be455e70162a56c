"""tf.data input pipelines: `make_dataset(name, split, batch_size=...)` and `dataset_info(name)`.

Datasets yield `(images, labels)`: float32 RAW RGB in [0, 255] `[B, H, W, 3]`
and int32 `[B]`; the models normalise inside. See `keras_preact.data.datasets`.

>>> from keras_preact import data
>>> data.dataset_info("digits").num_classes
10
"""

from keras_preact.data.datasets import (
    DATASETS,
    DatasetInfo,
    MissingDataError,
    dataset_info,
    digits_arrays,
    make_dataset,
)
from keras_preact.data.pipeline import reset_skipped_images, skipped_images

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "MissingDataError",
    "dataset_info",
    "digits_arrays",
    "make_dataset",
    "reset_skipped_images",
    "skipped_images",
]
