"""tf.data input pipelines: `make_dataset(name, split, batch_size=...)` and `dataset_info(name)`.

Datasets yield `(images, labels)`: float32 RAW RGB in [0, 255] `[B, H, W, 3]`
and int32 `[B]`; the models normalise inside. See `keras_preact.data.datasets`.

Layout: `datasets.py` (`make_dataset`, `dataset_info`) looks the name up in the
registry `sources/__init__.py`, whose source module (`sources/digits.py`,
`synthetic.py`, `cifar.py`, `imagenet2012.py`, `folder.py`, `tfrecord.py`)
reads the split's raw elements; `pipeline.py` holds every shared tf.data stage
(shard, shuffle, repeat, decode/augment, skipping bad images by name, batch,
prefetch); `augmentations.py` (`Augmentation`: timm's RandAugment, ops in
`randaugment.py`, random erasing and MixUp/CutMix) the optional training
augmentations.

Adding a dataset is one file plus one registry line: write
`keras_preact/data/sources/<name>.py` defining `SOURCE = Source(name, info,
read, splits=...)` (`read` returns a `pipeline.Raw`; see `sources/base.py`),
and add `<name>.SOURCE,` to the tuple in `keras_preact/data/sources/__init__.py`.

>>> from keras_preact import data
>>> data.dataset_info("digits").num_classes
10
"""

from keras_preact.requirements import require_tensorflow

require_tensorflow("keras_preact.data")

from keras_preact.data.augmentations import Augmentation
from keras_preact.data.datasets import dataset_info, make_dataset
from keras_preact.data.pipeline import reset_skipped_images, skipped_image_names, skipped_images
from keras_preact.data.sources import DATASETS, DatasetInfo, MissingDataError
from keras_preact.data.sources.digits import digits_arrays
from keras_preact.data.sources.tfrecord import tfrecord_files, tfrecord_label_offset

__all__ = [
    "DATASETS",
    "Augmentation",
    "DatasetInfo",
    "MissingDataError",
    "dataset_info",
    "digits_arrays",
    "make_dataset",
    "reset_skipped_images",
    "skipped_image_names",
    "skipped_images",
]
