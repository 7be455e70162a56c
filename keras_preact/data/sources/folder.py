"""`"folder"`: an image folder `<data_dir>/<split>/<class>/<image>` (JPEG, PNG, GIF, BMP).

Labels are the sorted class folder names of `train/` (or of the only split
present); the splits are the folders `train`, `val`, `validation` and `test`
that exist ("val" and "validation" stand for each other). Other files are
ignored.

Images that cannot be decoded are skipped and recorded by their path
(`pipeline.skipped_image_names()`; a training run lists them in
`<model_dir>/skipped_files.txt`). The split sizes (`num_examples`, hence a
run's steps per epoch) leave out the files that are known bad from their
first bytes alone: empty files and files that start with no image signature
(`augment.IMAGE_SIGNATURES`, for example a text file named .png), read when
the folder is listed (`bad_image_files`; local folders only: on a remote file
system such as gs:// every image file is counted). Damage further in (a
truncated JPEG, bad data) only shows when the image is decoded: such a file
is counted in `num_examples`, then skipped and recorded when read.

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
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from absl import logging

from keras_preact.data import augment, pipeline
from keras_preact.data.sources.base import DatasetInfo, MissingDataError, Source

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Threads reading the first bytes of the files of a split (`bad_image_files`).
HEADER_THREADS = 8


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


def _read_header(path):
    try:
        with open(path, "rb") as f:
            return f.read(augment.SIGNATURE_BYTES)
    except OSError:  # unreadable: bad too
        return b""


def _bad_in(paths):
    return [path for path in paths if not augment.has_image_signature(_read_header(path))]


def bad_image_files(paths):
    """The files of `paths` that are empty, unreadable or start with no image signature, in order.

    Reads `augment.SIGNATURE_BYTES` bytes of each file (`HEADER_THREADS`
    threads; about 10 us a file from the page cache: 13 s for ImageNet's
    1.33M). Remote paths (with a "://") are not read: none is reported.

    >>> import tempfile
    >>> text = os.path.join(tempfile.mkdtemp(), "notes.png")
    >>> _ = open(text, "w").write("not an image")
    >>> bad_image_files([text]) == [text]
    True
    """
    paths = [path for path in paths if "://" not in path]
    chunks = [paths[i : i + 256] for i in range(0, len(paths), 256)]
    with ThreadPoolExecutor(HEADER_THREADS) as pool:
        return [path for bad in pool.map(_bad_in, chunks) for path in bad]


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
        num_examples={s: _num_good(data_dir, s, class_names) for s in splits},
        splits=splits,
        eval_split=next((s for s in splits if s != "train"), "val"),
    )


def _num_good(data_dir, split, class_names):
    """How many image files of `split` are not known bad from their first bytes."""
    paths = folder_files(data_dir, split, class_names)[0]
    bad = bad_image_files(paths)
    if bad:
        logging.info(
            "%d of the %d image files of %s are empty or not images.", len(bad), len(paths), split
        )
    return len(paths) - len(bad)


def _read(split, request):
    class_names = folder_classes(request.data_dir)
    paths, labels = folder_files(request.data_dir, split, class_names)
    return pipeline.Raw(
        tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32))),
        shuffle_buffer=len(paths),
        read_bytes=lambda path, label: (tf.io.read_file(path), label),
        num_classes=len(class_names),
        name=lambda path, label: path,
    )


SOURCE = Source("folder", _info, _read, photos=True)
