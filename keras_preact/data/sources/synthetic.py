"""`"synthetic"`: random images and labels generated in-graph (no I/O), for benchmarks.

Element i of a split is drawn from stateless RNGs seeded by (seed, split, i),
so it is reproducible; any split name works. `make_dataset` options
`num_classes` (default 1000) and `num_examples` (default
`SYNTHETIC_NUM_EXAMPLES[split]`). Evaluation images have the eval crop's size,
like the photo datasets' eval crops.

>>> from keras_preact.data import pipeline
>>> raw = SOURCE.read("train", pipeline.Request(image_size=8), num_examples=3)
>>> [tuple(image.shape) for image, _ in raw.ds]
[(8, 8, 3), (8, 8, 3), (8, 8, 3)]
"""

from __future__ import annotations

import zlib

import tensorflow as tf

from keras_preact.data import augment, pipeline
from keras_preact.data.sources.base import DatasetInfo, Source

SYNTHETIC_NUM_EXAMPLES = {"train": 10_000, "validation": 1_000, "test": 1_000}
NUM_CLASSES = 1000
IMAGE_SIZE = 224


def _info(data_dir=None):
    return DatasetInfo(
        name="synthetic",
        num_classes=NUM_CLASSES,
        image_size=IMAGE_SIZE,
        normalization="torch",
        class_names=tuple(f"class_{i}" for i in range(NUM_CLASSES)),
        num_examples=dict(SYNTHETIC_NUM_EXAMPLES),
        splits=tuple(SYNTHETIC_NUM_EXAMPLES),
        eval_split="validation",
    )


def _read(split, request, num_classes=None, num_examples=None):
    image_size = request.image_size
    if not request.training and request.eval_crop_size is not None:
        image_size = request.eval_crop_size
    image_size = IMAGE_SIZE if image_size is None else int(image_size)
    num_classes = NUM_CLASSES if num_classes is None else int(num_classes)
    if num_examples is None:
        num_examples = SYNTHETIC_NUM_EXAMPLES.get(split, SYNTHETIC_NUM_EXAMPLES["train"])
    if num_classes <= 0 or image_size <= 0 or int(num_examples) <= 0:
        raise ValueError("synthetic needs positive num_classes, image_size and num_examples.")
    base = 0 if request.seed is None else int(request.seed)
    split_key = zlib.crc32(split.encode())  # a fixed stream per split

    def generate(index):
        seed = tf.stack([tf.constant(base + split_key, tf.int64), index])
        image_seed, label_seed = augment.split_seed(seed, 2)
        image = tf.random.stateless_uniform(
            [image_size, image_size, 3], image_seed, minval=0.0, maxval=255.0
        )
        label = tf.random.stateless_uniform(
            [], label_seed, minval=0, maxval=num_classes, dtype=tf.int32
        )
        return image, label

    # Sharded before generating, so that each pipeline generates only its share.
    ds = pipeline.shard(tf.data.Dataset.range(int(num_examples)), request.input_context)
    ds = ds.map(generate, num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
    return pipeline.Raw(ds, sharded=True)


SOURCE = Source("synthetic", _info, _read, options=("num_classes", "num_examples"))
