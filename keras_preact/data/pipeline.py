"""The tf.data stages shared by every source, in order: shard, shuffle, repeat, decode/augment, batch.

A source reads one split into a `Raw` (its `(x, label)` elements and how to
turn them into images); `finish(raw, request)` does the rest:

1. shard by `request.input_context` (unless the source did, `raw.sharded`);
2. training only: a seeded shuffle of `raw.shuffle_buffer` elements, a new
   order on each pass;
3. `repeat` forever when asked;
4. decoded images (`x` is an image): training applies `raw.augment(image,
   seed)`, one stateless seed per element; encoded photos (`raw.read_bytes`
   turns `x` into image bytes): training takes a random-resized crop and flip
   (plus colour noise with `color_augment`), evaluation the centre crop
   (`crops.eval_crop`), and a failing element is skipped and recorded;
   training with `request.augmentation` (`augmentations.Augmentation`) then
   applies RandAugment and random erasing to each image;
5. batch (parallel, in order); training with an augmentation that mixes:
   MixUp/CutMix on each batch (labels become float32 `[batch, num_classes]`);
   prefetch, with deterministic tf.data options.

A corrupt image never stops an epoch: an element whose reading or decoding
fails (bad bytes, unknown format, a truncated JPEG, an unreadable file, a label
outside the classes) is dropped and recorded once by its name (`Raw.name`: a
folder's file path, "record N of FILE" for TFRecords), however many passes
meet it: `skipped_images()` counts the distinct names, `skipped_image_names()`
lists them. Nothing is printed from the pipeline; the training run reports
the names between epochs and writes them to `<model_dir>/skipped_files.txt`
(`keras_preact.training.run`). How (`decode_and_count`): the elements enter
the decoding `map` (parallel, in order) numbered in chunks of `CHUNK_SIZE`,
each chunk after a marker that cannot fail; the map drops the failures with
`ignore_errors`, so a number missing before the next element or marker names
a failed element.

Example (two in-memory images, evaluation order, batches of 2):

>>> import numpy as np
>>> raw = Raw(tf.data.Dataset.from_tensor_slices((np.zeros([2, 4, 4, 3], np.uint8), [3, 1])))
>>> images, labels = next(iter(finish(raw, Request(per_replica_batch=2))))
>>> images.dtype.name, labels.numpy().tolist()
('float32', [3, 1])
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import tensorflow as tf

from keras_preact.data import augment, augmentations, crops

AUTOTUNE = tf.data.AUTOTUNE

# Records read ahead and shuffled for the photo datasets read from records
# (imagenet2012, tfrecord), as in the TF-official ResNet pipeline.
RECORD_SHUFFLE_BUFFER = 10_000

# Training crop size of the photo datasets when `image_size` is not given.
PHOTO_IMAGE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class Request:
    """The settings of one `make_dataset` call that the sources and the shared stages read.

    `per_replica_batch` is the batch of this input pipeline; the other fields
    are `make_dataset`'s arguments after their defaults were resolved.

    >>> context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    >>> request = Request(training=True, seed=5, input_context=context)
    >>> request.num_pipelines, request.pipeline_seed, request.record_shuffle_buffer
    (2, 1000008, 10000)
    """

    training: bool = False
    per_replica_batch: int = 1
    drop_remainder: bool = False
    repeat: bool = False
    seed: int | None = None
    input_context: tf.distribute.InputContext | None = None
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    eval_crop_size: int | None = None
    eval_preprocessing: dict | None = None
    color_augment: bool = False
    shuffle_buffer: int | None = None
    augmentation: augmentations.Augmentation | None = None
    tta: str = "none"

    @property
    def num_pipelines(self):
        """How many input pipelines share the data (1 without an input context)."""
        return 1 if self.input_context is None else self.input_context.num_input_pipelines

    @property
    def pipeline_seed(self):
        """The seed of this input pipeline: sharded pipelines shuffle and augment independently."""
        if self.seed is None:
            return None
        pipeline_id = self.input_context.input_pipeline_id if self.input_context else 0
        return int(self.seed) + 1_000_003 * pipeline_id

    @property
    def training_augmentation(self):
        """`augmentation` when training, else None (evaluation is never augmented)."""
        return self.augmentation if self.training else None

    @property
    def record_shuffle_buffer(self):
        """Training shuffle buffer of the record-based sources (`shuffle_buffer` or the default)."""
        return self.shuffle_buffer or RECORD_SHUFFLE_BUFFER


@dataclasses.dataclass(frozen=True)
class Raw:
    """One split as a source reads it: `(x, label)` elements, before the shared stages.

    Attributes:
      ds: the elements in their stored order. `x` is a decoded image (any
        real dtype; the same size for all) unless `read_bytes` is given, and
        `label` an integer >= 0 (with `read_bytes`, whatever `read_bytes`
        turns into one).
      shuffle_buffer: how many elements training shuffles (the whole split for
        data held in memory or a file list); None: never shuffled.
      sharded: `ds` already holds only this input pipeline's share (for
        sources that shard files or tfds splits); otherwise `finish` shards it.
      augment: decoded images only: the training augmentation
        `augment(image, seed) -> float32 image`; None: none.
      read_bytes: encoded photos: `read_bytes(x, label) -> (encoded image,
        label)` (a file read, a record parse, or nothing). Elements that fail
        here or in decoding are skipped and recorded by `name`.
      num_classes: with `read_bytes`: labels outside `[0, num_classes)` are
        skipped and recorded.
      name: with `read_bytes`: `name(x, label) -> string`, how a skipped
        element is named in reports (a file path; must not fail). Run only
        for skipped elements. None: "unnamed element #<fingerprint of x>".

    >>> Raw(tf.data.Dataset.range(3), shuffle_buffer=3).sharded
    False
    """

    ds: tf.data.Dataset
    shuffle_buffer: int | None = None
    sharded: bool = False
    augment: Callable | None = None
    read_bytes: Callable | None = None
    num_classes: int | None = None
    name: Callable | None = None


def finish(raw, request):
    """The batched, prefetched dataset of `(float32 images, int32 labels)` made from `raw`.

    With a training augmentation that mixes, labels are float32 soft labels
    `[batch, num_classes]`. See the module docstring for the stages.
    """
    ds = raw.ds if raw.sharded else shard(raw.ds, request.input_context)
    if request.training and raw.shuffle_buffer is not None:
        ds = ds.shuffle(
            raw.shuffle_buffer, seed=request.pipeline_seed, reshuffle_each_iteration=True
        )
    if request.repeat:
        ds = ds.repeat()
    if raw.read_bytes is None:
        ds = _decoded_images(ds, raw.augment, request)
    else:
        ds = _photo_crops(ds, raw, request)
    ds = batch_and_prefetch(
        ds, request.per_replica_batch, request.drop_remainder, batch_fn=_batch_mixer(request)
    )
    options = tf.data.Options()
    options.deterministic = True
    if request.input_context is not None:
        # Sharded here already; stop tf.distribute from sharding again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def shard(ds, input_context):
    """This input pipeline's share of `ds` (every n-th element), or `ds` with one pipeline.

    >>> context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    >>> [int(i) for i in shard(tf.data.Dataset.range(5), context)]
    [1, 3]
    """
    if input_context is None or input_context.num_input_pipelines <= 1:
        return ds
    return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def element_seeds(request):
    """An endless dataset of shape-[2] int64 seeds, one stream per input pipeline.

    Seeded, it is reproducible, and each pass over the data gets new seeds.

    >>> next(iter(element_seeds(Request(seed=0)))).shape
    TensorShape([2])
    """
    return tf.data.Dataset.random(
        seed=request.pipeline_seed, rerandomize_each_iteration=True
    ).batch(2, drop_remainder=True)


def _decoded_images(ds, augment_fn, request):
    """Casts to `(float32, int32)`; training applies `augment_fn(image, seed)`, then the augmentation."""
    augmentation = request.training_augmentation
    per_image = augmentation is not None and augmentation.per_image
    if request.training and (augment_fn is not None or per_image):

        def train_map(pair, seed):
            image = pair[0] if augment_fn is None else augment_fn(pair[0], seed)
            if per_image:
                image = augmentations.augment_image(image, seed, augmentation)
            return tf.cast(image, tf.float32), tf.cast(pair[1], tf.int32)

        ds = tf.data.Dataset.zip(ds, element_seeds(request))
        return ds.map(train_map, num_parallel_calls=AUTOTUNE, deterministic=True)
    views = _flip_views if request.tta == "flip" and not request.training else tf.identity
    return ds.map(
        lambda image, label: (views(tf.cast(image, tf.float32)), tf.cast(label, tf.int32)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def _flip_views(image):
    """`[2, h, w, c]`: the image and its left-right mirror (`tta="flip"` of whole images)."""
    return tf.stack([image, tf.reverse(image, axis=[1])])


def _photo_crops(ds, raw, request):
    """Decodes `(x, label)` into training crops or eval crops; failures are skipped and recorded."""
    image_size = PHOTO_IMAGE_SIZE if request.image_size is None else int(request.image_size)
    crop_size = image_size if request.eval_crop_size is None else int(request.eval_crop_size)
    eval_options = {
        k: v
        for k, v in (request.eval_preprocessing or {}).items()
        if k in ("interpolation", "crop_fraction")
    }

    def read(x, label):
        encoded, label = raw.read_bytes(x, label)
        label = tf.cast(label, tf.int32)
        in_range = tf.logical_and(label >= 0, label < raw.num_classes)
        with tf.control_dependencies(
            [tf.debugging.Assert(in_range, ["Label out of range:", label])]
        ):
            return augment.check_encoded_image(encoded), tf.identity(label)

    augmentation = request.training_augmentation

    def train_crop(x, label, seed):
        crop_seed, flip_seed, color_seed = augment.split_seed(seed, 3)
        encoded, label = read(x, label)
        image = augment.random_resized_crop(encoded, crop_seed, image_size)
        if request.color_augment:
            image = augment.color_augment(image, color_seed)
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        if augmentation is not None and augmentation.per_image:
            image = augmentations.augment_image(image, seed, augmentation)
        return image, label

    def eval_crop(x, label):
        encoded, label = read(x, label)
        image = crops.decode_image(encoded)
        if request.tta != "none":  # [views, crop, crop, 3]
            return crops.tta_crops(image, request.tta, crop_size, **eval_options), label
        return crops.eval_crop(image, crop_size, **eval_options), label

    size = image_size if request.training else crop_size
    views = [] if request.training or request.tta == "none" else [crops.TTA_VIEWS[request.tta]]
    return decode_and_count(
        ds,
        train_crop if request.training else eval_crop,
        image_shape=[*views, size, size, 3],
        name_fn=raw.name,
        seeds=element_seeds(request) if request.training else None,
    )


class SkipCounter:
    """The distinct elements the input pipelines skipped, by name; thread-safe, prints nothing.

    >>> counter = SkipCounter()
    >>> for name in ("b.jpg", "a.jpg", "b.jpg"):
    ...     counter.add(name)
    >>> counter.count, counter.names()
    (2, ['a.jpg', 'b.jpg'])
    >>> counter.take_unreported(), counter.take_unreported()
    (['b.jpg', 'a.jpg'], [])
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._reported = {}  # name -> reported yet; in the order first skipped

    @property
    def count(self):
        with self._lock:
            return len(self._reported)

    def add(self, name):
        with self._lock:
            self._reported.setdefault(name, False)

    def names(self):
        """The distinct names skipped, sorted."""
        with self._lock:
            return sorted(self._reported)

    def take_unreported(self):
        """The names not returned by an earlier call, in the order first skipped; marks them."""
        with self._lock:
            new = [name for name, reported in self._reported.items() if not reported]
            self._reported.update(dict.fromkeys(new, True))
            return new

    def reset(self):
        with self._lock:
            self._reported.clear()


SKIPPED = SkipCounter()


def skipped_images():
    """How many distinct images this process's input pipelines skipped as corrupt or unreadable.

    An image skipped again on a later pass over the data is not counted again.

    >>> reset_skipped_images(); skipped_images()
    0
    """
    return SKIPPED.count


def skipped_image_names():
    """The names (`Raw.name`, e.g. file paths) of the images `skipped_images()` counts, sorted."""
    return SKIPPED.names()


def reset_skipped_images():
    """Forgets the skipped images (for example at the start of a run or a test)."""
    SKIPPED.reset()


def _unnamed(x, label):
    """`Raw.name`'s default: the element told apart by a fingerprint of `x`."""
    content = tf.strings.join([tf.io.serialize_tensor(t) for t in tf.nest.flatten(x)])
    fingerprint = tf.strings.to_hash_bucket_fast(content, 2**62)
    return tf.strings.join(["unnamed element #", tf.strings.as_string(fingerprint)])


# Elements per marker in `decode_and_count`: the markers' share of the work is 1/CHUNK_SIZE.
CHUNK_SIZE = 64


def decode_and_count(ds, decode_fn, *, image_shape, name_fn=None, seeds=None):
    """Maps `decode_fn` over `ds` in parallel, in order; drops and records the elements that fail.

    `ds` yields `(x, label)`; `decode_fn(x, label)`, or `decode_fn(x, label,
    seed)` when a `seeds` dataset of shape-[2] seeds is given, returns `(image,
    label)` with a float32 image of `image_shape` (sources such as TFRecords
    carry their label inside). Returns a dataset of `(image, int32 label)`. An
    element whose `decode_fn` fails is dropped and `name_fn(x, label)` (a
    string; `Raw.name`) is added to `SKIPPED`.

    How: the elements go in chunks of `CHUNK_SIZE`. Each chunk enters the
    stream as a marker, then one item per element (its position in the chunk);
    every item holds the chunk itself (the same tensors, not copies). The
    parallel, order-keeping `map` passes markers through and decodes the
    element at each position; `ignore_errors` drops the elements that fail.
    So a position missing before the next item of its chunk, or before the
    next marker (a last marker closes the stream), is an element that failed:
    a `scan` records its name (a `py_function`, on that path only), and
    `unbatch` drops the markers (they hold no image). A failure in `ds` itself
    (there is no element to name) is skipped unrecorded.

    >>> ds = tf.data.Dataset.from_tensor_slices((["4", "x", "2", "y"], [0, 1, 2, 3]))
    >>> def decode(text, label):
    ...     return tf.fill([1], tf.strings.to_number(text)), label
    >>> reset_skipped_images()
    >>> name = lambda text, label: tf.strings.join(["text ", text])
    >>> decoded = decode_and_count(ds.repeat(2), decode, image_shape=[1], name_fn=name)
    >>> [int(label) for _, label in decoded]
    [0, 2, 0, 2]
    >>> skipped_images(), skipped_image_names()
    (2, ['text x', 'text y'])
    """
    name_fn = name_fn or _unnamed
    ds = ds.ignore_errors()  # so that a failure in ds cannot take its whole chunk along
    if seeds is None:
        unpack = lambda x, label: (x, label)  # noqa: E731
    else:
        ds = tf.data.Dataset.zip(ds, seeds)
        unpack = lambda pair, seed: (*pair, seed)  # noqa: E731
    batched = ds.batch(CHUNK_SIZE)
    chunks = _Chunks(batched.element_spec, unpack)
    no_chunk = chunks.empty()
    ds = batched.flat_map(chunks.marker_then_positions)
    ds = ds.concatenate(tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), no_chunk)))
    decode = _position_decoder(decode_fn, chunks, list(image_shape))
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
    ds = ds.scan((tf.constant(0, tf.int64), no_chunk), _failure_recorder(chunks, name_fn))
    return ds.unbatch()


@dataclasses.dataclass(frozen=True)
class _Chunks:
    """`decode_and_count`'s chunks: batches of up to `CHUNK_SIZE` elements of its input."""

    spec: object  # a chunk's element_spec
    unpack: Callable  # the input's element -> (x, label) or (x, label, seed)

    def empty(self):
        """A chunk of no element (the last marker's, and the scan's first state)."""
        return tf.nest.map_structure(
            lambda s: tf.zeros([0] + [d or 0 for d in s.shape.as_list()[1:]], s.dtype), self.spec
        )

    def size(self, chunk):
        """How many elements `chunk` holds (an int64 scalar)."""
        return tf.shape(self.unpack(*chunk)[1], out_type=tf.int64)[0]

    def element(self, chunk, k):
        """Element `k` of `chunk`, unpacked: (x, label) or (x, label, seed)."""
        return self.unpack(*tf.nest.map_structure(lambda t: t[k], chunk))

    def marker_then_positions(self, *chunk):
        """The stream items of a chunk: `(-1, chunk)` (its marker), then `(k, chunk)` for each k."""
        positions = tf.data.Dataset.range(-1, self.size(chunk))  # -1: the marker
        return tf.data.Dataset.zip(positions, tf.data.Dataset.from_tensors(chunk).repeat())


def _position_decoder(decode_fn, chunks, image_shape):
    """The `map` function: `(position, chunk)` -> `(position, images, labels, chunk)`.

    Images and labels have a leading dimension: 0 for a marker, 1 for an element.
    """

    def decode(position, chunk):
        def decoded():
            image, label = decode_fn(*chunks.element(chunk, position))
            image = tf.ensure_shape(tf.cast(image, tf.float32), image_shape)
            return image[None], tf.cast(label, tf.int32)[None]

        def marker():
            return tf.zeros([0, *image_shape]), tf.zeros([0], tf.int32)

        images, labels = tf.cond(position < 0, marker, decoded)
        return position, images, labels, chunk

    return decode


def _failure_recorder(chunks, name_fn):
    """The `scan` function: records the positions missing before each item as skipped.

    Its state: the next position expected and the chunk of the item before.
    """

    def record(first, stop, *flat_chunk):
        """Eager, in a `py_function`: records positions first..stop-1 of a chunk as skipped."""
        chunk = tf.nest.pack_sequence_as(chunks.spec, list(flat_chunk))
        for k in range(int(first), int(stop)):
            x, label = chunks.element(chunk, k)[:2]
            SKIPPED.add(name_fn(x, label).numpy().decode("utf-8", "replace"))
        return False

    def record_failures(state, item):
        expected, previous_chunk = state
        position, images, labels, chunk = item
        stop = tf.where(position < 0, chunks.size(previous_chunk), position)
        recorded = tf.cond(
            stop > expected,
            lambda: tf.py_function(
                record, [expected, stop, *tf.nest.flatten(previous_chunk)], tf.bool
            ),
            lambda: tf.constant(False),
        )
        with tf.control_dependencies([recorded]):
            expected = tf.where(position < 0, tf.constant(0, tf.int64), position + 1)
        return (expected, chunk), (images, labels)

    return record_failures


def batch_and_prefetch(ds, batch_size, drop_remainder, batch_fn=None):
    """Batches (parallel, in order), applies `batch_fn(batched dataset)` if given, prefetches.

    >>> [b.numpy().tolist() for b in batch_and_prefetch(tf.data.Dataset.range(5), 2, False)]
    [[0, 1], [2, 3], [4]]
    """
    ds = ds.batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    if batch_fn is not None:
        ds = batch_fn(ds)
    return ds.prefetch(AUTOTUNE)


def _batch_mixer(request):
    """`batch_and_prefetch`'s `batch_fn` that mixes the training batches, or None.

    Its seeds, one per batch, come from this pipeline's seed (`element_seeds`,
    on a stream of their own): reproducible with a seed, a new draw every batch.
    """
    augmentation = request.training_augmentation
    if augmentation is None or not augmentation.mixes:
        return None
    seeds = augmentations.batch_seeds(element_seeds(request))
    return lambda ds: augmentations.mix_batches(ds, seeds, augmentation)
