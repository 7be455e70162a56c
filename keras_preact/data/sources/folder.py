"""`"folder"`: an image folder `<data_dir>/<split>/<class>/<image>` (JPEG, PNG, GIF, BMP).

Labels are the sorted class folder names of `train/` (or of the only split
present); the splits are the folders `train`, `val`, `validation` and `test`
that exist ("val" and "validation" stand for each other). Other files are
ignored; images that cannot be decoded are skipped and counted.

>>> import tempfile
>>> import tensorflow as tf
>>> root = tempfile.mkdtemp()
>>> for path in ("train/cat/a.png", "train/dog/b.png", "val/dog/c.png"):
...     tf.io.gfile.makedirs(os.path.dirname(os.path.join(root, path)))
...     tf.io.write_file(os.path.join(root, path), tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)))
>>> info = SOURCE.info(root)
>>> info.class_names, info.num_examples, info.eval_split
(('cat', 'dog'), {'train': 2, 'val': 1}, 'val')
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from keras_preact.data import pipeline
from keras_preact.data.sources.base import DatasetInfo, MissingDataError, Source

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def _layout(data_dir):
    return (
        f"expected an image folder {data_dir!r} laid out as <data_dir>/train/<class>/<image> "
        f"(and <data_dir>/val/<class>/<image> for evaluation), with JPEG, PNG, GIF or BMP "
        f"images; labels are the sorted class folder names of train/ (ImageNet: "
        f"train/<wnid>/*.JPEG)"
    )


def _split_dir(data_dir, split):
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


def folder_classes(data_dir):
    """Sorted class folder names of `<data_dir>/train` (or of the only split present)."""
    if data_dir is None:
        raise MissingDataError(f"name='folder' needs data_dir: {_layout('<data_dir>')}.")
    root = _split_dir(data_dir, "train")
    if root is None:
        root = next((d for d in (_split_dir(data_dir, s) for s in ("val", "test")) if d), None)
    if root is None:
        raise MissingDataError(f"No train/ or val/ folder found: {_layout(data_dir)}.")
    classes = _subdirs(root)
    if not classes:
        raise MissingDataError(f"{root!r} has no class folders: {_layout(data_dir)}.")
    return tuple(classes)


def folder_files(data_dir, split, class_names):
    """Sorted `(paths, labels)` of the images of one split; other files are ignored."""
    split_dir = _split_dir(data_dir, split)
    if split_dir is None:
        raise MissingDataError(f"No {split}/ folder found: {_layout(data_dir)}.")
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
        raise MissingDataError(f"No images in {split_dir!r}.{hint} {_layout(data_dir)}.")
    if ignored:
        logging.info("Ignored %d non-image file(s) under %s.", ignored, split_dir)
    return paths, labels


def _info(data_dir=None):
    class_names = folder_classes(data_dir)
    splits = tuple(
        s
        for s in ("train", "val", "validation", "test")
        if tf.io.gfile.isdir(os.path.join(data_dir, s))
    )
    return DatasetInfo(
        name="folder",
        num_classes=len(class_names),
        image_size=pipeline.PHOTO_IMAGE_SIZE,
        normalization="torch",
        class_names=class_names,
        num_examples={s: len(folder_files(data_dir, s, class_names)[0]) for s in splits},
        splits=splits,
        eval_split=next((s for s in splits if s != "train"), "val"),
    )


def _read(split, request):
    class_names = folder_classes(request.data_dir)
    paths, labels = folder_files(request.data_dir, split, class_names)
    return pipeline.Raw(
        tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32))),
        shuffle_buffer=len(paths),
        read_bytes=lambda path, label: (tf.io.read_file(path), label),
        num_classes=len(class_names),
    )


SOURCE = Source("folder", _info, _read, photos=True)
