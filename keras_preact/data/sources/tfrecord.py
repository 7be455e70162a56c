"""`"tfrecord"`: TF-official ImageNet TFRecords `<data_dir>/train-*-of-*`, `<data_dir>/validation-*-of-*`.

Features `image/encoded` and `image/class/label`. Label rule: the TF-official /
TF-slim writers store labels 1..1000 (0 = "background"), so `label =
image/class/label - label_offset`. By default the offset is read from the
first records when they carry `image/class/synset` (offset = label - index of
that WordNet id in the ImageNet class list), and is 1 otherwise; pass the
`make_dataset` option `label_offset=0` for 0-based records. The first records
are checked before training (a wrong offset is a `ValueError`); a later record
whose label falls outside 0..999, or whose image does not decode, is skipped
and recorded as "record N of FILE" (N counted from 0 in that file).

With several input pipelines, each reads its own shard files (or, with fewer
files than pipelines, every n-th record).

>>> import tempfile
>>> import tensorflow as tf
>>> data_dir = tempfile.mkdtemp()
>>> with tf.io.TFRecordWriter(os.path.join(data_dir, "train-00000-of-00001")) as writer:
...     label = tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
...     features = tf.train.Features(feature={"image/class/label": label})
...     writer.write(tf.train.Example(features=features).SerializeToString())
>>> files = tfrecord_files(data_dir, "train")
>>> [os.path.basename(f) for f in files], tfrecord_label_offset(files)
(['train-00000-of-00001'], 1)
"""

from __future__ import annotations

import os

import tensorflow as tf

from keras_preact import preprocessing
from keras_preact.data import pipeline
from keras_preact.data.sources.base import MissingDataError, Source
from keras_preact.data.sources.imagenet2012 import NUM_CLASSES, imagenet_info

TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}
TFRECORD_LABEL_OFFSET = 1  # TF-official / TF-slim ImageNet: labels 1..1000, 0 = background


def tfrecord_files(data_dir, split):
    """Sorted TF-official shard files of `split`: `<data_dir>/<split>-*-of-*` ("val" = "validation")."""
    split = {"val": "validation"}.get(split, split)
    if data_dir is None:
        raise MissingDataError(
            "name='tfrecord' needs data_dir: a directory of TF-official ImageNet TFRecords "
            "(train-00000-of-01024 ..., validation-00000-of-00128 ...)."
        )
    pattern = os.path.join(data_dir, f"{split}-*")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise MissingDataError(
            f"No TFRecord files match {pattern!r}. Expected TF-official ImageNet TFRecords "
            f"(features image/encoded, image/class/label) named {split}-00000-of-NNNNN, as "
            f"written by the TensorFlow models' imagenet_to_gcs.py / build_imagenet_data.py."
        )
    return files


def tfrecord_label_offset(files, num_records=32):
    """The value to subtract from `image/class/label` to get 0-based labels (the rule of "tfrecord").

    Reads the first `num_records` records. When they carry `image/class/synset`
    (the TF-official writer stores the WordNet id), the offset is `label -
    index of the synset in the sorted ImageNet classes` and must agree over the
    records. Otherwise the TF-official/TF-slim convention applies: labels
    1..1000 with 0 = background, offset 1. Pass `label_offset=0` to
    `make_dataset` for records written with 0-based labels.
    """
    wnid_index = {wnid: i for i, (wnid, _) in enumerate(preprocessing.imagenet_classes())}
    spec = {
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    offsets = set()
    for record in tf.data.TFRecordDataset(files[:1]).take(num_records):
        example = tf.io.parse_single_example(record, spec)
        synset = example["image/class/synset"].numpy().decode("utf-8", "replace")
        if synset in wnid_index:
            offsets.add(int(example["image/class/label"]) - wnid_index[synset])
    if len(offsets) > 1:
        raise ValueError(
            f"Inconsistent image/class/label vs image/class/synset in {files[0]!r} "
            f"(offsets {sorted(offsets)}); pass label_offset explicitly."
        )
    return offsets.pop() if offsets else TFRECORD_LABEL_OFFSET


def _check_labels(files, label_offset, num_classes, num_records=32):
    """Fails before training when the first records' labels fall outside the classes."""
    for record in tf.data.TFRecordDataset(files[:1]).take(num_records):
        label = int(tf.io.parse_single_example(record, TFRECORD_FEATURES)["image/class/label"])
        if not 0 <= label - label_offset < num_classes:
            raise ValueError(
                f"image/class/label {label} in {files[0]!r} minus label_offset={label_offset} "
                f"is outside 0..{num_classes - 1}. TF-official ImageNet records are 1-based "
                f"(label_offset=1); 0-based records need label_offset=0."
            )


def _numbered_records(file):
    """`(record, file, its index in the file)` of every record of `file`."""
    return tf.data.TFRecordDataset(file).enumerate().map(lambda i, record: (record, file, i))


def _records(files, request):
    """This pipeline's `(record, file, index)`s: its shard files interleaved (shuffled to train)."""
    pipelines = request.num_pipelines
    ds = tf.data.Dataset.from_tensor_slices(files)
    if pipelines > 1 and len(files) >= pipelines:
        ds = pipeline.shard(ds, request.input_context)
    if request.training:
        ds = ds.shuffle(len(files), seed=request.pipeline_seed)
    ds = ds.interleave(
        _numbered_records,
        cycle_length=min(16, len(files)),
        num_parallel_calls=pipeline.AUTOTUNE,
        deterministic=True,
    )
    if pipelines > 1 and len(files) < pipelines:
        ds = pipeline.shard(ds, request.input_context)
    return ds


def _read(split, request, label_offset=None):
    files = tfrecord_files(request.data_dir, split)
    if label_offset is None:
        label_offset = tfrecord_label_offset(files)
    label_offset = int(label_offset)
    _check_labels(files, label_offset, NUM_CLASSES)

    def parse(numbered, _):
        example = tf.io.parse_single_example(numbered[0], TFRECORD_FEATURES)
        return example["image/encoded"], example["image/class/label"] - label_offset

    def name(numbered, _):
        _, file, index = numbered
        return tf.strings.join(["record ", tf.strings.as_string(index), " of ", file])

    return pipeline.Raw(
        _records(files, request).map(lambda *numbered: (numbered, tf.constant(0, tf.int64))),
        shuffle_buffer=request.record_shuffle_buffer,
        sharded=True,
        read_bytes=parse,
        num_classes=NUM_CLASSES,
        name=name,
    )


SOURCE = Source(
    "tfrecord",
    lambda data_dir=None: imagenet_info("tfrecord", {"train": None, "validation": None}),
    _read,
    splits=("train", "validation", "val"),
    photos=True,
    options=("label_offset",),
)
