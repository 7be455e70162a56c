"""`make_dataset` and `dataset_info`: the input pipelines of every recipe.

Every dataset yields `(images, labels)`: float32 `[B, H, W, 3]` RAW RGB in
[0, 255] and int32 `[B]` (float32 soft labels `[B, num_classes]` when training
with an `augmentation` that mixes, see `augmentations.Augmentation`). The models normalise inside (their
`include_preprocessing`), with the statistics named by
`dataset_info(name).normalization`.

Datasets (`DATASETS`; each source module in `keras_preact/data/sources/`
documents its own):

* `"digits"`: scikit-learn's bundled 8x8 digits upsampled to 32x32 (no download).
* `"synthetic"`: random images and labels generated in-graph, for benchmarks.
* `"cifar10"`, `"cifar100"`: tensorflow-datasets ("train" / "test").
* `"imagenet2012"`: tensorflow-datasets' build of the ILSVRC-2012 tars.
* `"folder"`: `<data_dir>/train/<class>/*`, `<data_dir>/val/<class>/*`.
* `"tfrecord"`: TF-official ImageNet TFRecords (`train-*-of-*`, `validation-*-of-*`).

The last three are "photo" datasets: training takes an Inception-style
random-resized crop from the encoded bytes (`augment.random_resized_crop`) and
a random flip, plus fb.resnet.torch colour noise when `color_augment=True`;
evaluation takes the paper's centre crop (`crops.eval_crop`). An image that
cannot be read or decoded (garbage bytes, unknown format, a truncated JPEG) is
skipped, never an error mid-epoch, and recorded once by name (a file path; a
TFRecord's "record N of FILE"), however many passes meet it:
`skipped_images()` counts them, `skipped_image_names()` lists them, and a
training run writes the list to `<model_dir>/skipped_files.txt`.

With `seed`, everything is reproducible: seeded shuffles, stateless random
ops with one seed per element, deterministic tf.data ordering. Parallelism
and prefetching are AUTOTUNE. The stages are in `keras_preact.data.pipeline`.

Example:

>>> ds = make_dataset("digits", "train", batch_size=32, seed=0)
>>> images, labels = next(iter(ds))
>>> images.shape, labels.dtype
(TensorShape([32, 32, 32, 3]), tf.int32)
"""

from __future__ import annotations

from keras_preact.data import crops, pipeline
from keras_preact.data.augmentations import Augmentation

# DATASETS, DatasetInfo, MissingDataError, digits_arrays and the tfrecord helpers
# stay importable from here for older imports; their homes are in sources/.
from keras_preact.data.sources import DATASETS, SOURCES, DatasetInfo, MissingDataError  # noqa: F401
from keras_preact.data.sources.digits import digits_arrays  # noqa: F401
from keras_preact.data.sources.tfrecord import tfrecord_files, tfrecord_label_offset  # noqa: F401
from keras_preact.options import check_choice


def _source(name):
    if name not in SOURCES:
        raise ValueError(f"Unknown dataset {name!r}. Allowed names: {', '.join(SOURCES)}.")
    return SOURCES[name]


def dataset_info(name, data_dir=None):
    """Facts about dataset `name` (see `DatasetInfo`); reads at most a folder listing.

    >>> info = dataset_info("cifar10")
    >>> info.num_classes, info.image_size, info.normalization, info.eval_split
    (10, 32, 'cifar10', 'test')
    """
    return _source(name).info(data_dir)


# Over 80 lines for its public signature and argument docs only; the code is ~20 lines.
def make_dataset(
    name,
    split,
    *,
    batch_size,
    data_dir=None,
    download=False,
    training=None,
    image_size=None,
    eval_crop_size=None,
    eval_preprocessing=None,
    seed=None,
    input_context=None,
    drop_remainder=None,
    repeat=False,
    color_augment=False,
    num_classes=None,
    num_examples=None,
    label_offset=None,
    shuffle_buffer=None,
    augmentation=None,
    tta="none",
):
    """A batched, prefetched `tf.data.Dataset` of `(images, labels)` for `name` / `split`.

    Args:
      name: one of `DATASETS`.
      split: a split name of the dataset (`dataset_info(name).splits`).
      batch_size: the GLOBAL batch size; with `input_context` each input
        pipeline batches `input_context.get_per_replica_batch_size(batch_size)`.
      data_dir: where the data lives (tfds data dir, image folder root, TFRecord
        directory); tfds' own default for tfds datasets.
      download: let tfds download and prepare cifar10/cifar100 (internet) or
        build imagenet2012 from the tars in `<data_dir>/downloads/manual`.
      training: augment and shuffle; defaults to `split == "train"`. Evaluation
        keeps the stored order and is deterministic.
      image_size: training crop size of the photo datasets (224) or synthetic
        image size; CIFAR and digits are 32 only.
      eval_crop_size: evaluation centre-crop size of the photo datasets
        (default `image_size`): 224 comes from the shorter side resized to 256,
        320 from 320 (`crops.eval_crop`).
      eval_preprocessing: a dict of the photo datasets' eval-crop `interpolation`
        and `crop_fraction` (default: bilinear, the paper's crops); pass
        `keras_preact.preprocessing.eval_preprocessing(model)` to evaluate a
        pretrained model the way its weights source published its accuracy.
      seed: makes shuffling and augmentation reproducible (stateless ops and a
        seeded shuffle; each pass over the data still gets a new order).
      input_context: a `tf.distribute.InputContext`; the data is sharded over
        its input pipelines. drop_remainder: defaults to `training`.
      repeat: repeat forever (for `steps_per_epoch` loops).
      color_augment: photo datasets only: fb.resnet.torch colour jitter and
        PCA lighting noise.
      num_classes, num_examples: synthetic only (defaults 1000 and
        `SYNTHETIC_NUM_EXAMPLES[split]`).
      label_offset: tfrecord only; subtracted from `image/class/label`
        (default: `tfrecord_label_offset`, 1 for TF-official 1..1000 labels).
      shuffle_buffer: training shuffle buffer of the record-based datasets
        (default `pipeline.RECORD_SHUFFLE_BUFFER`; in-memory data and file
        lists are shuffled whole).
      augmentation: an `Augmentation` (training only; evaluation ignores it):
        timm's RandAugment and random erasing per image after the crop and
        flip, MixUp/CutMix per batch (labels then float32 `[B, num_classes]`).
      tta: evaluation only: test-time views, images `[B, views, H, W, 3]`:
        "flip" (the crop and its mirror) or, photo datasets, "ten_crop"
        (`crops.ten_crop`); "none" (default): `[B, H, W, 3]`.

    Corrupt or unreadable images are skipped and recorded by name
    (`skipped_images()`, `skipped_image_names()`).
    A missing dataset raises `MissingDataError` naming where it was looked for.
    """
    source = _source(name)
    per_replica = _per_replica_batch(batch_size, input_context)
    training = (split == "train") if training is None else bool(training)
    options = dict(num_classes=num_classes, num_examples=num_examples, label_offset=label_offset)
    _check_options(source, options, color_augment)
    _check_augmentation(augmentation)
    _check_tta(source, tta, training)
    source.check(split, image_size)
    request = pipeline.Request(
        training=training,
        per_replica_batch=per_replica,
        drop_remainder=training if drop_remainder is None else bool(drop_remainder),
        repeat=repeat,
        seed=seed,
        input_context=input_context,
        data_dir=data_dir,
        download=download,
        image_size=image_size,
        eval_crop_size=eval_crop_size,
        eval_preprocessing=eval_preprocessing,
        color_augment=color_augment,
        shuffle_buffer=shuffle_buffer,
        augmentation=augmentation,
        tta=tta,
    )
    raw = source.read(split, request, **{k: options[k] for k in source.options})
    return pipeline.finish(raw, request)


def _per_replica_batch(batch_size, input_context):
    if batch_size is None or int(batch_size) <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if input_context is None:
        return int(batch_size)
    return input_context.get_per_replica_batch_size(int(batch_size))


def _check_options(source, options, color_augment):
    """Rejects the source-specific options (`Source.options`, `Source.photos`) `source` lacks."""
    for option, value in options.items():
        if value is not None and option not in source.options:
            allowed = ", ".join(s.name for s in SOURCES.values() if option in s.options)
            raise ValueError(f"{option} applies to {allowed} only, not {source.name!r}.")
    if color_augment and not source.photos:
        photos = ", ".join(s.name for s in SOURCES.values() if s.photos)
        raise ValueError(
            f"color_augment applies to the photo datasets ({photos}), not {source.name!r}."
        )


def _check_augmentation(augmentation):
    if augmentation is None:
        return
    if not isinstance(augmentation, Augmentation):
        raise ValueError(
            f"augmentation must be a keras_preact.data.Augmentation or None, got {augmentation!r}."
        )
    augmentation.validate()


def _check_tta(source, tta, training):
    check_choice("tta", tta, crops.TTA_MODES)
    if tta != "none" and training:
        raise ValueError(f"tta={tta!r} is for evaluation; training datasets take no tta.")
    if tta == "ten_crop" and not source.photos:
        raise ValueError(
            f"tta='ten_crop' crops photos resized larger than the crop; {source.name!r} images "
            "are evaluated whole: use tta='flip'."
        )
