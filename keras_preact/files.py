"""Files that a reader never sees half-written: a temporary name beside the target, then a rename.

`atomic_path` and `atomic_write` are the one way keras-preact writes a file
(run directories, converted weights, exports). Local paths use the standard
library; paths with a scheme (`gs://...`) go through `tf.io.gfile`, and only
then is TensorFlow imported, so the model zoo runs without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid


def _gfile():
    """`tf.io.gfile`, for paths with a scheme (`gs://...`); TensorFlow is imported only then."""
    import tensorflow as tf  # here, not at the top: local paths need no TensorFlow

    return tf.io.gfile


def _remote(path):
    return "://" in os.fspath(path)


def exists(path):
    """Whether `path` exists (a local path, or a `tf.io.gfile` one such as `gs://...`)."""
    return _gfile().exists(path) if _remote(path) else os.path.exists(path)


def open_file(path, mode="r"):
    """`open(path, mode)` for local paths, `tf.io.gfile.GFile` for remote ones."""
    return _gfile().GFile(path, mode) if _remote(path) else open(path, mode)


def _rename(source, target):
    if _remote(target):
        _gfile().rename(source, target, overwrite=True)
    else:
        os.replace(source, target)


def _remove_if_there(path):
    if _remote(path):
        import tensorflow as tf  # remote paths only

        if tf.io.gfile.exists(path):
            with contextlib.suppress(tf.errors.OpError):
                tf.io.gfile.remove(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


# ---------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renamed onto `path` when the block succeeds.

    For writers that take a file name (`model.save`, `h5py.File`, tf2onnx).
    On an exception the temporary file is removed and `path` is left as it
    was. Works on local paths and on `tf.io.gfile` ones (e.g. `gs://`).

    >>> import tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(target).read()
    'done'
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    # Keep the file's extension last: Keras picks the format by it (.keras, .weights.h5).
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")
    try:
        yield tmp
        _rename(tmp, path)
    finally:
        _remove_if_there(tmp)


def atomic_write(path, data):
    """Writes `data` (str or bytes) to `path` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        with open_file(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)


def write_json(path, value):
    """`value` as indented JSON at `path`, atomically."""
    atomic_write(path, json.dumps(value, indent=1) + "\n")
