"""The tf.data stages shared by every source: decode/augment, skip-and-count, batch.

A corrupt image never stops an epoch: an element whose decoding fails (bad
bytes, unknown format, a truncated JPEG, an unreadable file) is dropped, and
`skipped_images()` counts it (logged with absl). Only an element that is
actually dropped from the stream is counted, exactly once, when the stream
moves past it.

How: the elements are numbered (`enumerate`) before the decoding `map`, the
failing ones are dropped by `ignore_errors`, and a `scan` after it adds up the
gaps in the numbering. A sentinel element closes a finite stream so that
failures at its very end are counted too.
"""

from __future__ import annotations

import threading

import tensorflow as tf
from absl import logging

AUTOTUNE = tf.data.AUTOTUNE


class SkipCounter:
    """Thread-safe count of images the pipelines dropped because they could not be decoded.

    >>> counter = SkipCounter()
    >>> counter.add(2)
    >>> counter.count
    2
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self):
        with self._lock:
            return self._count

    def add(self, n):
        n = int(n)
        with self._lock:
            self._count += n
            total = self._count
        logging.warning(
            "Skipped %d corrupt or unreadable image(s); %d skipped so far in this process.",
            n,
            total,
        )

    def reset(self):
        with self._lock:
            self._count = 0


SKIPPED = SkipCounter()


def skipped_images():
    """How many images the input pipelines of this process have skipped as corrupt or unreadable.

    >>> reset_skipped_images(); skipped_images()
    0
    """
    return SKIPPED.count


def reset_skipped_images():
    """Sets `skipped_images()` back to 0 (for example at the start of an epoch or a test)."""
    SKIPPED.reset()


def _record_skips(n):
    SKIPPED.add(n.numpy())
    return n


def decode_and_count(ds, decode_fn, *, image_shape, finite, seeds=None):
    """Maps `decode_fn` over `ds` in parallel, dropping and counting the elements that fail.

    `ds` yields `(source, label)` (a string and an integer label);
    `decode_fn(source, label)`, or `decode_fn(source, label, seed)` when a
    `seeds` dataset of shape-[2] seeds is given, returns `(image, label)` with
    a float32 image of `image_shape` (sources such as TFRecords carry their
    label inside). Returns a dataset of `(image, int32 label)` in input order.
    `finite` says whether `ds` ends (then a sentinel closes it, so failures at
    its very end are counted too).
    """
    if finite:
        sentinel = (tf.constant(b""), tf.constant(-1, ds.element_spec[1].dtype))
        ds = ds.concatenate(tf.data.Dataset.from_tensors(sentinel))
    if seeds is not None:
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda pair, seed: (*pair, seed))
    ds = ds.enumerate()

    def decode(index, element):
        def real():
            image, label = decode_fn(*element)
            image = tf.ensure_shape(tf.cast(image, tf.float32), image_shape)
            return image, tf.cast(label, tf.int32)

        def sentinel():
            return tf.zeros(image_shape, tf.float32), tf.constant(-1, tf.int32)

        image, label = tf.cond(element[1] < 0, sentinel, real)
        return index, image, label

    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()

    def count(last_index, element):
        index, image, label = element
        gap = index - last_index - 1
        gap = tf.cond(
            gap > 0,
            lambda: tf.py_function(_record_skips, [gap], tf.int64),
            lambda: gap,
        )
        with tf.control_dependencies([gap]):
            index = tf.identity(index)
        return index, (image, label)

    ds = ds.scan(tf.constant(-1, tf.int64), count)
    if finite:
        ds = ds.filter(lambda image, label: label >= 0)
    return ds


def batch_and_prefetch(ds, batch_size, drop_remainder):
    """Batches (parallel, in order) and prefetches (AUTOTUNE)."""
    ds = ds.batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    return ds.prefetch(AUTOTUNE)
