"""`make_dataset` and `dataset_info`: the input pipelines of every recipe.

Every dataset yields `(images, labels)`: float32 `[B, H, W, 3]` RAW RGB in
[0, 255] and int32 `[B]`. The models normalise inside (their
`include_preprocessing`), with the statistics named by
`dataset_info(name).normalization`.

Datasets (`DATASETS`):

* `"digits"`: scikit-learn's bundled 8x8 digits (1,797 images, no download),
  upsampled to 32x32 RGB; a fixed stratified 80/20 split ("train" / "test").
  Training: pad 2 with the black background + random 32x32 crop (no flip).
* `"synthetic"`: random images and labels generated in-graph (no I/O), for
  benchmarks. Options `num_classes`, `num_examples`.
* `"cifar10"`, `"cifar100"`: tensorflow-datasets ("train" / "test"). Training:
  pad 4 with the dataset's mean pixel + random 32x32 crop + horizontal flip.
* `"imagenet2012"`: tensorflow-datasets' build of the ILSVRC-2012 tars
  ("train" / "validation").
* `"folder"`: `<data_dir>/train/<class>/*`, `<data_dir>/val/<class>/*` (JPEG,
  PNG, GIF, BMP); labels are the sorted class folder names of `train/`.
* `"tfrecord"`: TF-official ImageNet TFRecords `<data_dir>/train-*-of-*`,
  `<data_dir>/validation-*-of-*` (`image/encoded`, `image/class/label`).
  Label rule: the TF-official / TF-slim writers store labels 1..1000 (0 =
  "background"), so `label = image/class/label - label_offset`. By default the
  offset is read from the first records when they carry `image/class/synset`
  (offset = label - index of that WordNet id in the ImageNet class list), and
  is 1 otherwise; pass `label_offset=0` for 0-based records. The first records
  are checked before training (a wrong offset is a `ValueError`); a later
  record whose label falls outside 0..999 is skipped and counted.

The last three are "photo" datasets: training takes an Inception-style
random-resized crop from the encoded bytes (`augment.random_resized_crop`) and
a random flip, plus fb.resnet.torch colour noise when `color_augment=True`;
evaluation takes the paper's centre crop (`crops.eval_crop`). An image that
cannot be read or decoded (garbage bytes, unknown format, a truncated JPEG) is
skipped and counted, never an error mid-epoch: see `skipped_images()`.

With `seed`, everything is reproducible: seeded shuffles, stateless random
ops with one seed per element, deterministic tf.data ordering. Parallelism
and prefetching are AUTOTUNE.

Example:

>>> ds = make_dataset("digits", "train", batch_size=32, seed=0)
>>> images, labels = next(iter(ds))
>>> images.shape, labels.dtype
(TensorShape([32, 32, 32, 3]), tf.int32)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zlib

import numpy as np
import tensorflow as tf
from absl import logging

from keras_preact import preprocessing
from keras_preact.data import augment, crops, pipeline

AUTOTUNE = tf.data.AUTOTUNE

DATASETS = ("digits", "synthetic", "cifar10", "cifar100", "imagenet2012", "folder", "tfrecord")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")

# Records read ahead and shuffled for the photo datasets read from records
# (imagenet2012, tfrecord), as in the TF-official ResNet pipeline.
RECORD_SHUFFLE_BUFFER = 10_000

IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_NUM_EXAMPLES = {"train": 1_281_167, "validation": 50_000}

CIFAR10_CLASSES = ("airplane automobile bird cat deer dog frog horse ship truck").split()
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach "
    "couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster "
    "house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree "
    "motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear "
    "pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road "
    "rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel "
    "streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()

DIGITS_TEST_FRACTION = 0.2
DIGITS_RANDOM_STATE = 0
DIGITS_SIZE = 32
SYNTHETIC_NUM_EXAMPLES = {"train": 10_000, "validation": 1_000, "test": 1_000}


class MissingDataError(FileNotFoundError, ValueError):
    """The dataset is not where it was looked for; the message says how to provide it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a training loop needs to know about a dataset before reading it.

    `image_size` is the training crop size, `normalization` a key of
    `keras_preact.preprocessing.NORMALIZATIONS`, `num_examples` maps a split to
    its size (None when unknown without reading everything; for "folder", the
    number of image files, undecodable ones included), `splits` lists
    the split names and `eval_split` is the one to evaluate on.
    """

    name: str
    num_classes: int
    image_size: int
    normalization: str
    class_names: tuple
    num_examples: dict
    splits: tuple = ("train", "test")
    eval_split: str = "test"


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Allowed names: {', '.join(DATASETS)}.")


def dataset_info(name, data_dir=None):
    """Facts about dataset `name` (see `DatasetInfo`); reads at most a folder listing.

    >>> info = dataset_info("cifar10")
    >>> info.num_classes, info.image_size, info.normalization, info.eval_split
    (10, 32, 'cifar10', 'test')
    """
    _check_name(name)
    if name == "digits":
        arrays = _digits_arrays()
        return DatasetInfo(
            name=name,
            num_classes=10,
            image_size=DIGITS_SIZE,
            normalization="digits",
            class_names=tuple(str(i) for i in range(10)),
            num_examples={split: len(arrays[split][1]) for split in ("train", "test")},
        )
    if name == "synthetic":
        return DatasetInfo(
            name=name,
            num_classes=1000,
            image_size=224,
            normalization="torch",
            class_names=tuple(f"class_{i}" for i in range(1000)),
            num_examples=dict(SYNTHETIC_NUM_EXAMPLES),
            splits=tuple(SYNTHETIC_NUM_EXAMPLES),
            eval_split="validation",
        )
    if name in ("cifar10", "cifar100"):
        names = CIFAR10_CLASSES if name == "cifar10" else CIFAR100_CLASSES
        return DatasetInfo(
            name=name,
            num_classes=len(names),
            image_size=32,
            normalization=name,
            class_names=tuple(names),
            num_examples={"train": 50_000, "test": 10_000},
        )
    if name in ("imagenet2012", "tfrecord"):
        return DatasetInfo(
            name=name,
            num_classes=1000,
            image_size=224,
            normalization="torch",
            class_names=tuple(wnid for wnid, _ in preprocessing.imagenet_classes()),
            num_examples=dict(IMAGENET_NUM_EXAMPLES)
            if name == "imagenet2012"
            else {"train": None, "validation": None},
            splits=("train", "validation"),
            eval_split="validation",
        )
    # folder
    class_names = _folder_classes(data_dir)
    splits = tuple(
        s
        for s in ("train", "val", "validation", "test")
        if tf.io.gfile.isdir(os.path.join(data_dir, s))
    )
    num_examples = {s: len(_folder_files(data_dir, s, class_names)[0]) for s in splits}
    eval_split = next((s for s in splits if s != "train"), "val")
    return DatasetInfo(
        name=name,
        num_classes=len(class_names),
        image_size=224,
        normalization="torch",
        class_names=class_names,
        num_examples=num_examples,
        splits=splits,
        eval_split=eval_split,
    )


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
):
    """A batched, prefetched `tf.data.Dataset` of `(images, labels)` for `name` / `split`.

    Args:
      name: one of `DATASETS`.
      split: a split name of the dataset (`dataset_info(name).splits`).
      batch_size: the GLOBAL batch size; with `input_context` each input
        pipeline batches `input_context.get_per_replica_batch_size(batch_size)`.
      data_dir: where the data lives (tfds data dir, image folder root, TFRecord
        directory). tfds datasets default to tfds' own default.
      download: let tfds download and prepare cifar10/cifar100 (needs the
        internet) or build imagenet2012 from the tars in
        `<data_dir>/downloads/manual`.
      training: augment and shuffle; defaults to `split == "train"`. Evaluation
        keeps the stored order and is deterministic.
      image_size: training crop size of the photo datasets (224) or synthetic
        image size; CIFAR and digits are 32 only.
      eval_crop_size: evaluation centre-crop size of the photo datasets
        (default `image_size`): 224 comes from the shorter side resized to 256,
        320 from 320 (`crops.eval_crop`).
      eval_preprocessing: the `interpolation` and `crop_fraction` of the
        photo datasets' eval crops, as a dict; pass
        `keras_preact.preprocessing.eval_preprocessing(model)` to evaluate a
        pretrained model the way its weights source published its accuracy
        (default: bilinear, the paper's crops).
      seed: makes shuffling and augmentation reproducible (stateless ops and a
        seeded shuffle; each pass over the data still gets a new order).
      input_context: a `tf.distribute.InputContext`; the data is sharded over
        its input pipelines.
      drop_remainder: defaults to `training`.
      repeat: repeat forever (for `steps_per_epoch` loops).
      color_augment: photo datasets only: fb.resnet.torch colour jitter and
        PCA lighting noise.
      num_classes, num_examples: synthetic only (defaults 1000 and
        `SYNTHETIC_NUM_EXAMPLES[split]`).
      label_offset: tfrecord only; subtracted from `image/class/label`. The
        TF-official ImageNet writer stores 1..1000 (0 is "background"), so the
        default is 1; see `tfrecord_label_offset`.
      shuffle_buffer: training shuffle buffer of the record-based datasets
        (default `RECORD_SHUFFLE_BUFFER`; in-memory data and file lists are
        shuffled whole).

    Corrupt or unreadable images are skipped and counted (`skipped_images()`).
    A missing dataset raises `MissingDataError` naming where it was looked for.
    """
    _check_name(name)
    if batch_size is None or int(batch_size) <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    training = (split == "train") if training is None else bool(training)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    per_replica = int(batch_size)
    if input_context is not None:
        per_replica = input_context.get_per_replica_batch_size(int(batch_size))
    for option, value, allowed in (
        ("num_classes", num_classes, ("synthetic",)),
        ("num_examples", num_examples, ("synthetic",)),
        ("label_offset", label_offset, ("tfrecord",)),
    ):
        if value is not None and name not in allowed:
            raise ValueError(f"{option} applies to {', '.join(allowed)} only, not {name!r}.")
    if color_augment and name not in ("imagenet2012", "folder", "tfrecord"):
        raise ValueError(
            f"color_augment applies to the photo datasets (imagenet2012, folder, tfrecord), "
            f"not {name!r}."
        )
    options = dict(
        split=split,
        per_replica_batch=per_replica,
        data_dir=data_dir,
        download=download,
        training=training,
        image_size=image_size,
        eval_crop_size=eval_crop_size,
        eval_preprocessing=eval_preprocessing,
        seed=seed,
        input_context=input_context,
        drop_remainder=drop_remainder,
        repeat=repeat,
        color_augment=color_augment,
        shuffle_buffer=shuffle_buffer,
    )
    if name == "digits":
        ds = _digits(**options)
    elif name == "synthetic":
        ds = _synthetic(**options, num_classes=num_classes, num_examples=num_examples)
    elif name in ("cifar10", "cifar100"):
        ds = _cifar(name, **options)
    elif name == "imagenet2012":
        ds = _imagenet2012(**options)
    elif name == "folder":
        ds = _folder(**options)
    else:
        ds = _tfrecord(**options, label_offset=label_offset)
    ds_options = tf.data.Options()
    ds_options.deterministic = True
    if input_context is not None:
        # Sharded here already; stop tf.distribute from sharding again.
        ds_options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
    return ds.with_options(ds_options)


# ---------------------------------------------------------------- helpers


def _check_split(name, split, splits):
    if split not in splits:
        raise ValueError(
            f"Unknown split {split!r} for {name!r}. Allowed splits: {', '.join(splits)}."
        )


def _fixed_size(name, image_size, size=32):
    if image_size is not None and int(image_size) != size:
        raise ValueError(f"{name} images are {size}x{size}; got image_size={image_size}.")


def _shard(ds, input_context):
    if input_context is None or input_context.num_input_pipelines <= 1:
        return ds
    return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def _element_seeds(seed, input_context):
    """An endless dataset of shape-[2] int64 seeds, one stream per input pipeline.

    Seeded, it is reproducible, and each pass over the data gets new seeds.
    """
    seed = _pipeline_seed(seed, input_context)
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(
        2, drop_remainder=True
    )


def _pipeline_seed(seed, input_context):
    """The seed of one input pipeline: sharded pipelines shuffle and augment independently."""
    if seed is None:
        return None
    return int(seed) + 1_000_003 * (input_context.input_pipeline_id if input_context else 0)


def _in_memory_pipeline(
    ds,
    *,
    size,
    augment_fn,
    per_replica_batch,
    training,
    seed,
    input_context,
    drop_remainder,
    repeat,
):
    """Shared tail of the datasets held in memory (digits, cifar): shuffle, augment, batch."""
    if training:
        ds = ds.shuffle(
            size, seed=_pipeline_seed(seed, input_context), reshuffle_each_iteration=True
        )
    if repeat:
        ds = ds.repeat()
    if training:
        ds = tf.data.Dataset.zip(ds, _element_seeds(seed, input_context))
        ds = ds.map(
            lambda pair, s: (augment_fn(pair[0], s), tf.cast(pair[1], tf.int32)),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    else:
        ds = ds.map(
            lambda image, label: (tf.cast(image, tf.float32), tf.cast(label, tf.int32)),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    return pipeline.batch_and_prefetch(ds, per_replica_batch, drop_remainder)


# ---------------------------------------------------------------- digits


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
    _check_split("digits", split, ("train", "test"))
    return _digits_arrays()[split]


def _digits(*, split, image_size, input_context, **options):
    _check_split("digits", split, ("train", "test"))
    _fixed_size("digits", image_size)
    images, labels = digits_arrays(split)
    ds = _shard(tf.data.Dataset.from_tensor_slices((images, labels)), input_context)
    return _in_memory_pipeline(
        ds,
        size=len(labels),
        augment_fn=lambda image, s: augment.pad_crop_flip(image, s, pad=2, fill=0.0, flip=False),
        per_replica_batch=options["per_replica_batch"],
        training=options["training"],
        seed=options["seed"],
        input_context=input_context,
        drop_remainder=options["drop_remainder"],
        repeat=options["repeat"],
    )


# ---------------------------------------------------------------- synthetic


def _synthetic(
    *,
    split,
    per_replica_batch,
    training,
    image_size,
    eval_crop_size,
    seed,
    input_context,
    drop_remainder,
    repeat,
    num_classes,
    num_examples,
    **_,
):
    """Element i is drawn from stateless RNGs seeded by (seed, split, i): no I/O, reproducible.

    Evaluation batches have the eval crop's size, like the photo datasets' eval crops.
    """
    if not training and eval_crop_size is not None:
        image_size = eval_crop_size
    image_size = 224 if image_size is None else int(image_size)
    num_classes = 1000 if num_classes is None else int(num_classes)
    if num_examples is None:
        num_examples = SYNTHETIC_NUM_EXAMPLES.get(split, SYNTHETIC_NUM_EXAMPLES["train"])
    if num_classes <= 0 or image_size <= 0 or int(num_examples) <= 0:
        raise ValueError("synthetic needs positive num_classes, image_size and num_examples.")
    base = 0 if seed is None else int(seed)
    split_key = zlib.crc32(split.encode())  # a fixed stream per split

    def generate(index):
        s = tf.stack([tf.constant(base + split_key, tf.int64), index])
        image_seed, label_seed = augment.split_seed(s, 2)
        image = tf.random.stateless_uniform(
            [image_size, image_size, 3], image_seed, minval=0.0, maxval=255.0
        )
        label = tf.random.stateless_uniform(
            [], label_seed, minval=0, maxval=num_classes, dtype=tf.int32
        )
        return image, label

    ds = _shard(tf.data.Dataset.range(int(num_examples)), input_context)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(generate, num_parallel_calls=AUTOTUNE, deterministic=True)
    return pipeline.batch_and_prefetch(ds, per_replica_batch, drop_remainder)


# ---------------------------------------------------------------- photo datasets


def _photo_pipeline(
    ds,
    *,
    read_fn,
    finite,
    training,
    image_size,
    eval_crop_size,
    eval_preprocessing,
    seed,
    color_augment,
    per_replica_batch,
    drop_remainder,
    num_classes,
    input_context,
):
    """Decodes `(source, label)` elements into training crops or eval crops, then batches.

    `read_fn(source, label) -> (encoded bytes, label)`: a file read, a TFRecord
    parse, or nothing. Elements that fail to read or decode, and labels outside
    `[0, num_classes)`, are skipped and counted (`skipped_images()`).
    """
    image_size = 224 if image_size is None else int(image_size)
    crop_size = image_size if eval_crop_size is None else int(eval_crop_size)
    eval_options = {
        k: v
        for k, v in (eval_preprocessing or {}).items()
        if k in ("interpolation", "crop_fraction")
    }

    def read(source, label):
        encoded, label = read_fn(source, label)
        label = tf.cast(label, tf.int32)
        in_range = tf.logical_and(label >= 0, label < num_classes)
        with tf.control_dependencies(
            [tf.debugging.Assert(in_range, ["Label out of range:", label])]
        ):
            return augment.check_encoded_image(encoded), tf.identity(label)

    if training:

        def decode(source, label, seed_pair):
            crop_seed, flip_seed, color_seed = augment.split_seed(seed_pair, 3)
            encoded, label = read(source, label)
            image = augment.random_resized_crop(encoded, crop_seed, image_size)
            if color_augment:
                image = augment.color_augment(image, color_seed)
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            return image, label

        shape = [image_size, image_size, 3]
    else:

        def decode(source, label):
            encoded, label = read(source, label)
            image = crops.decode_image(encoded)
            return crops.eval_crop(image, crop_size, **eval_options), label

        shape = [crop_size, crop_size, 3]
    ds = pipeline.decode_and_count(
        ds,
        decode,
        image_shape=shape,
        finite=finite,
        seeds=_element_seeds(seed, input_context) if training else None,
    )
    return pipeline.batch_and_prefetch(ds, per_replica_batch, drop_remainder)


def _shuffle_and_repeat(ds, *, training, repeat, buffer_size, seed, input_context):
    if training:
        ds = ds.shuffle(
            buffer_size, seed=_pipeline_seed(seed, input_context), reshuffle_each_iteration=True
        )
    return ds.repeat() if repeat else ds


def _photo_options(options):
    return {
        key: options[key]
        for key in (
            "training",
            "image_size",
            "eval_crop_size",
            "eval_preprocessing",
            "seed",
            "color_augment",
            "per_replica_batch",
            "drop_remainder",
        )
    }


# ---------------------------------------------------------------- tensorflow-datasets


def _tfds_missing_message(name, builder, split):
    where = builder.data_dir_root
    if name == "imagenet2012":
        manual = os.path.join(where, "downloads", "manual")
        return (
            f"imagenet2012 ({split}) is not prepared in the tfds data_dir {where!r} "
            f"(looked for {str(builder.data_path)!r}). tfds cannot download ImageNet: get "
            f"{' and '.join(IMAGENET_TARS)} from image-net.org, put them in {manual!r}, and "
            f"call make_dataset(..., download=True) once (or run `tfds build imagenet2012 "
            f"--data_dir={where} --manual_dir={manual}`). Or use name='folder' "
            f"(train/<wnid>/*.JPEG) or name='tfrecord' (TF-official TFRecords)."
        )
    return (
        f"{name} ({split}) is not prepared in the tfds data_dir {where!r} (looked for "
        f"{str(builder.data_path)!r}). Pass download=True to let tensorflow-datasets download "
        f"and prepare it (needs the internet), or prepare it elsewhere with `tfds build {name} "
        f"--data_dir=DIR` and pass data_dir=DIR."
    )


def _tfds_dataset(name, split, *, data_dir, download, decoders, shuffle_files, seed, input_context):
    """`builder.as_dataset(split)` sharded over `input_context`, or a `MissingDataError`."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        if name == "imagenet2012":
            manual = os.path.join(builder.data_dir_root, "downloads", "manual")
            missing = [
                tar for tar in IMAGENET_TARS if not tf.io.gfile.exists(os.path.join(manual, tar))
            ]
            if missing and not builder.is_prepared():
                raise MissingDataError(
                    f"download=True for imagenet2012 needs the ILSVRC-2012 tars in the manual "
                    f"directory {manual!r}; missing: {', '.join(missing)}. Download them from "
                    f"image-net.org (they cannot be fetched automatically)."
                )
        builder.download_and_prepare()
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    try:
        num_shards = builder.info.splits[split].num_shards
    except (KeyError, ValueError, TypeError):
        num_shards = 0  # unknown (for example under tfds.testing.mock_data)
    tfds_shards = pipelines > 1 and num_shards >= pipelines
    read_config = tfds.ReadConfig(
        shuffle_seed=seed, input_context=input_context if tfds_shards else None
    )
    try:
        ds = builder.as_dataset(
            split=split, shuffle_files=shuffle_files, decoders=decoders, read_config=read_config
        )
    except AssertionError as error:  # tfds' "could not find data in ..."
        raise MissingDataError(_tfds_missing_message(name, builder, split)) from error
    if pipelines > 1 and not tfds_shards:
        ds = _shard(ds, input_context)
    return ds


def _cifar(name, *, split, data_dir, download, image_size, input_context, **options):
    _check_split(name, split, ("train", "test"))
    _fixed_size(name, image_size)
    ds = _tfds_dataset(
        name,
        split,
        data_dir=data_dir,
        download=download,
        decoders=None,
        shuffle_files=False,
        seed=None,
        input_context=input_context,
    )
    ds = ds.map(lambda ex: (ex["image"], ex["label"]), num_parallel_calls=AUTOTUNE).cache()
    fill = preprocessing.NORMALIZATIONS[name][0]  # pads become 0 after normalisation
    size = dataset_info(name).num_examples[split]
    if input_context is not None:
        size = -(-size // input_context.num_input_pipelines)
    return _in_memory_pipeline(
        ds,
        size=size,
        augment_fn=lambda image, s: augment.pad_crop_flip(image, s, pad=4, fill=fill),
        per_replica_batch=options["per_replica_batch"],
        training=options["training"],
        seed=options["seed"],
        input_context=input_context,
        drop_remainder=options["drop_remainder"],
        repeat=options["repeat"],
    )


def _imagenet2012(*, split, data_dir, download, input_context, shuffle_buffer, **options):
    import tensorflow_datasets as tfds

    _check_split("imagenet2012", split, ("train", "validation"))
    ds = _tfds_dataset(
        "imagenet2012",
        split,
        data_dir=data_dir,
        download=download,
        decoders={"image": tfds.decode.SkipDecoding()},
        shuffle_files=options["training"],
        seed=options["seed"],
        input_context=input_context,
    )
    ds = ds.map(lambda ex: (ex["image"], ex["label"]))
    ds = _shuffle_and_repeat(
        ds,
        training=options["training"],
        repeat=options["repeat"],
        buffer_size=shuffle_buffer or RECORD_SHUFFLE_BUFFER,
        seed=options["seed"],
        input_context=input_context,
    )
    return _photo_pipeline(
        ds,
        read_fn=lambda encoded, label: (encoded, label),
        finite=not options["repeat"],
        num_classes=1000,
        input_context=input_context,
        **_photo_options(options),
    )


# ---------------------------------------------------------------- folder


def _folder_layout(data_dir):
    return (
        f"expected an image folder {data_dir!r} laid out as <data_dir>/train/<class>/<image> "
        f"(and <data_dir>/val/<class>/<image> for evaluation), with JPEG, PNG, GIF or BMP "
        f"images; labels are the sorted class folder names of train/ (ImageNet: "
        f"train/<wnid>/*.JPEG)"
    )


def _folder_split_dir(data_dir, split):
    """The directory of `split` ("val" and "validation" stand for each other), or None."""
    if data_dir is None:
        return None
    aliases = {"val": ("val", "validation"), "validation": ("validation", "val")}
    for candidate in aliases.get(split, (split,)):
        path = os.path.join(data_dir, candidate)
        if tf.io.gfile.isdir(path):
            return path
    return None


def _subdirs(path):
    return sorted(
        entry.rstrip("/")
        for entry in tf.io.gfile.listdir(path)
        if tf.io.gfile.isdir(os.path.join(path, entry.rstrip("/")))
    )


def _folder_classes(data_dir):
    """Sorted class folder names of `<data_dir>/train` (or of the only split present)."""
    if data_dir is None:
        raise MissingDataError(f"name='folder' needs data_dir: {_folder_layout('<data_dir>')}.")
    root = _folder_split_dir(data_dir, "train")
    if root is None:
        root = next(
            (d for d in (_folder_split_dir(data_dir, s) for s in ("val", "test")) if d), None
        )
    if root is None:
        raise MissingDataError(f"No train/ or val/ folder found: {_folder_layout(data_dir)}.")
    classes = _subdirs(root)
    if not classes:
        raise MissingDataError(f"{root!r} has no class folders: {_folder_layout(data_dir)}.")
    return tuple(classes)


def _folder_files(data_dir, split, class_names):
    """Sorted `(paths, labels)` of the images of one split; other files are ignored."""
    split_dir = _folder_split_dir(data_dir, split)
    if split_dir is None:
        raise MissingDataError(f"No {split}/ folder found: {_folder_layout(data_dir)}.")
    present = _subdirs(split_dir)
    unknown = sorted(set(present) - set(class_names))
    if unknown:
        raise ValueError(
            f"{split_dir!r} has class folders that train/ lacks: {', '.join(unknown[:10])}"
            f"{' ...' if len(unknown) > 10 else ''}. Every split must use train/'s classes."
        )
    paths, labels, ignored = [], [], 0
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(split_dir, class_name)
        if class_name not in present:
            continue
        for entry in sorted(tf.io.gfile.listdir(class_dir)):
            if entry.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(class_dir, entry))
                labels.append(label)
            else:
                ignored += 1
    if not paths:
        loose = [e for e in tf.io.gfile.listdir(split_dir) if e.lower().endswith(IMAGE_EXTENSIONS)]
        hint = (
            f" It holds {len(loose)} image(s) directly: sort them into <class>/ folders."
            if loose
            else ""
        )
        raise MissingDataError(f"No images in {split_dir!r}.{hint} {_folder_layout(data_dir)}.")
    if ignored:
        logging.info("Ignored %d non-image file(s) under %s.", ignored, split_dir)
    return paths, labels


def _folder(*, split, data_dir, input_context, **options):
    class_names = _folder_classes(data_dir)
    paths, labels = _folder_files(data_dir, split, class_names)
    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32)))
    ds = _shard(ds, input_context)
    ds = _shuffle_and_repeat(
        ds,
        training=options["training"],
        repeat=options["repeat"],
        buffer_size=len(paths),
        seed=options["seed"],
        input_context=input_context,
    )
    return _photo_pipeline(
        ds,
        read_fn=lambda path, label: (tf.io.read_file(path), label),
        finite=not options["repeat"],
        num_classes=len(class_names),
        input_context=input_context,
        **_photo_options(options),
    )


# ---------------------------------------------------------------- TF-official TFRecords

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


def _check_tfrecord_labels(files, label_offset, num_classes, num_records=32):
    """Fails before training when the first records' labels fall outside the classes."""
    for record in tf.data.TFRecordDataset(files[:1]).take(num_records):
        label = int(tf.io.parse_single_example(record, TFRECORD_FEATURES)["image/class/label"])
        if not 0 <= label - label_offset < num_classes:
            raise ValueError(
                f"image/class/label {label} in {files[0]!r} minus label_offset={label_offset} "
                f"is outside 0..{num_classes - 1}. TF-official ImageNet records are 1-based "
                f"(label_offset=1); 0-based records need label_offset=0."
            )


def _tfrecord(*, split, data_dir, input_context, shuffle_buffer, label_offset, **options):
    _check_split("tfrecord", split, ("train", "validation", "val"))
    files = tfrecord_files(data_dir, split)
    if label_offset is None:
        label_offset = tfrecord_label_offset(files)
    label_offset = int(label_offset)
    _check_tfrecord_labels(files, label_offset, 1000)
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    training = options["training"]
    seed = options["seed"]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if pipelines > 1 and len(files) >= pipelines:
        ds = _shard(ds, input_context)
    if training:
        ds = ds.shuffle(len(files), seed=_pipeline_seed(seed, input_context))
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(16, len(files)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if pipelines > 1 and len(files) < pipelines:
        ds = _shard(ds, input_context)
    ds = ds.map(lambda record: (record, tf.constant(0, tf.int64)))
    ds = _shuffle_and_repeat(
        ds,
        training=training,
        repeat=options["repeat"],
        buffer_size=shuffle_buffer or RECORD_SHUFFLE_BUFFER,
        seed=seed,
        input_context=input_context,
    )

    def parse(record, _):
        example = tf.io.parse_single_example(record, TFRECORD_FEATURES)
        return example["image/encoded"], example["image/class/label"] - label_offset

    return _photo_pipeline(
        ds,
        read_fn=parse,
        finite=not options["repeat"],
        num_classes=1000,
        input_context=input_context,
        **_photo_options(options),
    )
