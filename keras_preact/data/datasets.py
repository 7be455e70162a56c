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

The last three are "photo" datasets: training takes an Inception-style
random-resized crop from the encoded bytes (`augment.random_resized_crop`) and
a random flip, plus fb.resnet.torch colour noise when `color_augment=True`;
evaluation takes the paper's centre crop (`crops.eval_crop`).

Example:

>>> ds = make_dataset("digits", "train", batch_size=32, seed=0)
>>> images, labels = next(iter(ds))
>>> images.shape, labels.dtype
(TensorShape([32, 32, 32, 3]), tf.int32)
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np
import tensorflow as tf

from keras_preact import preprocessing
from keras_preact.data import augment, pipeline

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
    its size (None when unknown without reading everything), `splits` lists
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
        s for s in ("train", "val", "validation", "test") if _folder_split_dir(data_dir, s)
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


def _element_seeds(seed):
    """An endless dataset of shape-[2] int64 seeds; a new stream on every pass when seeded."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(
        2, drop_remainder=True
    )


def _shuffle_seed(seed, input_context):
    """Per-pipeline shuffle seed (sharded pipelines shuffle their own shard)."""
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
            size, seed=_shuffle_seed(seed, input_context), reshuffle_each_iteration=True
        )
    if repeat:
        ds = ds.repeat()
    if training:
        ds = tf.data.Dataset.zip(ds, _element_seeds(seed))
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
    image_size,
    seed,
    input_context,
    drop_remainder,
    repeat,
    num_classes,
    num_examples,
    **_,
):
    """Element i is drawn from stateless RNGs seeded by (seed, split, i): no I/O, reproducible."""
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


# ---------------------------------------------------------------- photo datasets (in progress)


def _not_yet(*args, **kwargs):
    raise NotImplementedError("This dataset lands in the next commit.")


_cifar = _imagenet2012 = _folder = _tfrecord = _not_yet


def _folder_classes(data_dir):
    _not_yet()


def _folder_split_dir(data_dir, split):
    _not_yet()


def _folder_files(data_dir, split, class_names):
    _not_yet()
