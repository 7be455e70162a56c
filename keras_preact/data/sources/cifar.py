"""`"cifar10"`, `"cifar100"`: CIFAR from tensorflow-datasets ("train" / "test"), with class names.

The images (32x32) are decoded once and cached in memory. Training: pad 4 with
the dataset's mean pixel (0 after the model's normalisation) + random 32x32
crop + horizontal flip. `download=True` lets tfds download and prepare them.

>>> CIFAR100.info().class_names[:3]
('apple', 'aquarium_fish', 'baby')
"""

from __future__ import annotations

import functools

from keras_preact import preprocessing
from keras_preact.data import augment, pipeline
from keras_preact.data.sources import tfds_common
from keras_preact.data.sources.base import DatasetInfo, Source

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
CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}
NUM_EXAMPLES = {"train": 50_000, "test": 10_000}
IMAGE_SIZE = 32


def _info(name, data_dir=None):
    return DatasetInfo(
        name=name,
        num_classes=len(CLASSES[name]),
        image_size=IMAGE_SIZE,
        normalization=name,
        class_names=tuple(CLASSES[name]),
        num_examples=dict(NUM_EXAMPLES),
    )


def _read(name, split, request):
    ds = tfds_common.tfds_split(name, split, request)
    ds = ds.map(lambda ex: (ex["image"], ex["label"]), num_parallel_calls=pipeline.AUTOTUNE)
    fill = preprocessing.NORMALIZATIONS[name][0]  # pads become 0 after normalisation
    return pipeline.Raw(
        ds.cache(),
        shuffle_buffer=-(-NUM_EXAMPLES[split] // request.num_pipelines),
        sharded=True,
        augment=functools.partial(augment.pad_crop_flip, pad=4, fill=fill),
    )


def _source(name):
    return Source(
        name,
        functools.partial(_info, name),
        functools.partial(_read, name),
        splits=tuple(NUM_EXAMPLES),
        fixed_size=IMAGE_SIZE,
    )


CIFAR10 = _source("cifar10")
CIFAR100 = _source("cifar100")
