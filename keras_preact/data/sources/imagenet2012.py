"""`"imagenet2012"`: tensorflow-datasets' build of the ILSVRC-2012 tars ("train" / "validation").

tfds cannot download ImageNet: with `download=True` it builds the dataset from
`ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` in
`<data_dir>/downloads/manual`. The JPEG bytes are read undecoded, so that
training decodes only its random-resized crop; an image that does not decode
is skipped and recorded by its `file_name` (n01440764_10026.JPEG).
`imagenet_info` is shared with the "tfrecord" source (same 1,000 classes).

>>> SOURCE.info().num_examples
{'train': 1281167, 'validation': 50000}
"""

from __future__ import annotations

import os

import tensorflow as tf

from keras_preact import preprocessing
from keras_preact.data import pipeline
from keras_preact.data.sources import tfds_common
from keras_preact.data.sources.base import DatasetInfo, MissingDataError, Source

IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_NUM_EXAMPLES = {"train": 1_281_167, "validation": 50_000}
NUM_CLASSES = 1000


def imagenet_info(name, num_examples):
    """The `DatasetInfo` of an ImageNet-1k source: WordNet ids as class names, 224 crops.

    >>> imagenet_info("tfrecord", {"train": None}).class_names[:2]
    ('n01440764', 'n01443537')
    """
    return DatasetInfo(
        name=name,
        num_classes=NUM_CLASSES,
        image_size=pipeline.PHOTO_IMAGE_SIZE,
        normalization="torch",
        class_names=tuple(wnid for wnid, _ in preprocessing.imagenet_classes()),
        num_examples=num_examples,
        splits=("train", "validation"),
        eval_split="validation",
    )


def _manual_dir(where):
    return os.path.join(where, "downloads", "manual")


def _missing_message(name, split, where, looked_for):
    manual = _manual_dir(where)
    return (
        f"imagenet2012 ({split}) is not prepared in the tfds data_dir {where!r} "
        f"(looked for {looked_for!r}). tfds cannot download ImageNet: get "
        f"{' and '.join(IMAGENET_TARS)} from image-net.org, put them in {manual!r}, and "
        f"prepare them once with download=True (or run `tfds build imagenet2012 "
        f"--data_dir={where} --manual_dir={manual}`). Or use name='folder' "
        f"(train/<wnid>/*.JPEG) or name='tfrecord' (TF-official TFRecords)."
    )


def _check_tars(builder):
    """Before `download_and_prepare`: the tars must be in the manual directory."""
    manual = _manual_dir(str(builder.data_dir_root))
    missing = [tar for tar in IMAGENET_TARS if not tf.io.gfile.exists(os.path.join(manual, tar))]
    if missing and not builder.is_prepared():
        raise MissingDataError(
            f"download=True for imagenet2012 needs the ILSVRC-2012 tars in the manual "
            f"directory {manual!r}; missing: {', '.join(missing)}. Download them from "
            f"image-net.org (they cannot be fetched automatically)."
        )


def _read(split, request):
    import tensorflow_datasets as tfds

    ds = tfds_common.tfds_split(
        "imagenet2012",
        split,
        request,
        decoders={"image": tfds.decode.SkipDecoding()},
        shuffle_files=request.training,
        shuffle_seed=request.seed,
        message=_missing_message,
        before_download=_check_tars,
    )
    return pipeline.Raw(
        ds.map(lambda ex: ((ex["image"], ex["file_name"]), ex["label"])),
        shuffle_buffer=request.record_shuffle_buffer,
        sharded=True,
        read_bytes=lambda x, label: (x[0], label),
        num_classes=NUM_CLASSES,
        name=lambda x, label: x[1],
    )


SOURCE = Source(
    "imagenet2012",
    lambda data_dir=None: imagenet_info("imagenet2012", dict(IMAGENET_NUM_EXAMPLES)),
    _read,
    splits=tuple(IMAGENET_NUM_EXAMPLES),
    photos=True,
)
