"""Files that a reader never sees half-written: a temporary name beside the target, then a rename.

`atomic_path` and `atomic_write` are the one way keras-preact writes a file
(run directories, converted weights, exports). Local paths use the standard
library; paths with a scheme (`gs://...`) go through `tf.io.gfile`, and only
then is TensorFlow imported, so the model zoo runs without it.

A write that finds its disk full (`ENOSPC`, a quota, or TensorFlow's
"No space left on device") raises `DiskFullError`, an `OSError` whose message
is one line: which file, about how much it needed, how much was free, and that
the target was left as it was (the temporary file is removed).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid

# What a full disk (or quota) says, in an error of any type (h5py, TensorFlow, zipfile).
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "errno = 28")


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


# ------------------------------------------------------------------ full disks


class DiskFullError(OSError):
    """A write found its disk (or quota) full; `str(error)` is one line saying what to do.

    `filename` is the file that did not fit; nothing half-written was left under its name.
    """

    def __init__(self, message, path):
        super().__init__(errno.ENOSPC, message, os.fspath(path))

    def __str__(self):
        return self.strerror


def is_disk_full(error):
    """Whether `error` (or an exception it was raised from) says that a disk or quota is full."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(error) for text in _DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def free_bytes(path):
    """Bytes free on the filesystem holding `path` (its nearest existing folder); None if unknown."""
    if _remote(path):
        return None
    folder = os.path.abspath(os.fspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def size_text(count):
    """`count` bytes in words: "512 bytes", "2.3 kB", "1.25 MB", "3.1 GB".

    >>> size_text(512), size_text(2_300), size_text(1_250_000)
    ('512 bytes', '2.3 kB', '1.25 MB')
    """
    if count < 1000:
        return f"{int(count)} bytes"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        if count < 1000 * scale or unit == "TB":
            value = count / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def disk_full_message(path, needed=None, what=None):
    """One line: `what` (default: the file's name) did not fit on the disk of `path`, with sizes."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path)) if not _remote(path) else os.path.dirname(path)
    free = free_bytes(folder)
    sizes = [f"about {size_text(needed)} needed"] if needed else []
    if free is not None:
        sizes.append(f"{size_text(free)} free")
    return (
        f"The disk is full (No space left on device): {what or os.path.basename(path)} did not "
        f"fit in {folder}" + (f" ({', '.join(sizes)})" if sizes else "") + "."
    )


@contextlib.contextmanager
def disk_full_as_error(path, needed=None, what=None, then=""):
    """Inside the block, an error that says the disk is full becomes a `DiskFullError` on `path`.

    `then` is appended to its message (what was kept, how to go on); a callable
    is called for it when the disk fills (what was kept by then).
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if not is_disk_full(error):
            raise
        message = disk_full_message(path, needed, what)
        then = then() if callable(then) else then
        raise DiskFullError(f"{message} {then}".strip(), path) from None


# ---------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_path(path, needed=None):
    """Yields a temporary path beside `path`; renamed onto `path` when the block succeeds.

    For writers that take a file name (`model.save`, `h5py.File`, tf2onnx).
    On an exception the temporary file is removed and `path` is left as it
    was; a full disk raises `DiskFullError` naming `path` (and `needed`, the
    bytes the file takes, when the caller knows about how many). Works on local
    paths and on `tf.io.gfile` ones (e.g. `gs://`).

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
    kept = "It was not written; what was there before is unchanged."
    try:
        with disk_full_as_error(path, needed, then=kept):
            yield tmp
            _rename(tmp, path)
    finally:
        _remove_if_there(tmp)


def atomic_write(path, data):
    """Writes `data` (str or bytes) to `path` through a temporary file and a rename."""
    size = len(data.encode("utf-8") if isinstance(data, str) else data)
    with atomic_path(path, needed=size) as tmp:
        with open_file(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)


def write_json(path, value):
    """`value` as indented JSON at `path`, atomically."""
    atomic_write(path, json.dumps(value, indent=1) + "\n")
