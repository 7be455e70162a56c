"""Download public checkpoints once, verify them, and cache their conversion.

Files come through `keras.utils.get_file` into Keras' cache
(`$KERAS_HOME/keras_preact/downloads`, `~/.keras` by default) under a temporary
name that is renamed into place only after the download finished and its hash
(where the publisher pins one) matched: an interrupted or corrupt download
never leaves a file that a later call would load. The converted variables are
cached beside them (`.../keras_preact/converted/<source>.h5`, written the same
way) and later calls load that without touching the original.

`KERAS_PREACT_WEIGHTS_MIRROR`, when set, replaces every source's base URL:
the file is fetched from `<mirror>/<source.mirror_path>`, e.g.
`file:///srv/weights/timm/resnetv2_50.a1h_in1k/model.safetensors`.
"""

from __future__ import annotations

import contextlib
import os
import socket

import h5py
import numpy as np

from keras_preact.files import atomic_path

MIRROR_ENV = "KERAS_PREACT_WEIGHTS_MIRROR"
TIMEOUT_S = 20  # per socket operation: an unreachable host fails in seconds, never hangs
_FORMAT_VERSION = 1  # of the converted-cache files


class WeightsDownloadError(OSError):
    """A checkpoint could not be downloaded or failed its hash check."""


def keras_home():
    """Keras' cache folder (`$KERAS_HOME`, else `~/.keras`), as `keras.utils.get_file` uses it."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _cache_dir(kind):
    return os.path.join(keras_home(), "keras_preact", kind)


def source_file(source, notop=False):
    """`(url, mirror path, hash)` of a source's file (its no-top variant with `notop`)."""
    if notop and source.notop_url:
        url, mirror_path, file_hash = source.notop_url, source.notop_mirror_path, source.notop_hash
    else:
        url, mirror_path, file_hash = source.url, source.mirror_path, source.file_hash
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        url = mirror.rstrip("/") + "/" + mirror_path
    return url, mirror_path, file_hash


def downloaded_path(source, notop=False):
    """Where the source's file is (or will be) cached."""
    _, mirror_path, _ = source_file(source, notop)
    return os.path.join(_cache_dir("downloads"), mirror_path.replace("/", "--"))


@contextlib.contextmanager
def _socket_timeout(seconds):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch(source, notop=False):
    """Path of the source's checkpoint file in the cache, downloading and verifying it first.

    Raises `WeightsDownloadError` naming the URL, the cache path and what to
    do instead (a local file, a mirror) when the download fails or the file
    does not match the publisher's hash; nothing is left in the cache then.
    """
    import keras

    url, _, file_hash = source_file(source, notop)
    final = downloaded_path(source, notop)
    if os.path.isfile(final):
        return final
    folder, name = os.path.split(final)
    partial = os.path.join(folder, f".{name}.{os.getpid()}.partial")
    os.makedirs(folder, exist_ok=True)  # get_file falls back to /tmp when it does not exist
    try:
        with _socket_timeout(TIMEOUT_S):
            partial = keras.utils.get_file(
                fname=os.path.basename(partial),
                origin=url,
                file_hash=file_hash,
                hash_algorithm=source.hash_algorithm if file_hash else "auto",
                cache_dir=os.path.dirname(os.path.dirname(folder)),
                cache_subdir=os.path.join("keras_preact", "downloads"),
            )
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        if not isinstance(error, Exception):
            raise  # KeyboardInterrupt and the like, after the cleanup
        hash_failed = isinstance(error, ValueError) and "file hash does not match" in str(error)
        what = "failed its hash check" if hash_failed else "could not be downloaded"
        raise WeightsDownloadError(
            f"The weights {source.name!r} {what}: {url} ({error}). Nothing was cached at "
            f"{final}. Offline or behind a firewall? Download the file elsewhere and pass its "
            f"path (weights='/path/to/{os.path.basename(source_file(source, notop)[1])}'), "
            f"put it at {final}, or set {MIRROR_ENV} to a mirror that holds "
            f"{source_file(source, notop)[1]}."
        ) from None
    os.replace(partial, final)
    return final


def converted_path(source, notop=False):
    """Where the converted variables of a source are cached."""
    safe = source.name.replace(":", "--").replace("/", "--")
    return os.path.join(_cache_dir("converted"), safe + ("-notop" if notop else "") + ".h5")


def write_converted(path, values, source):
    """Writes `{variable path: array}` to `path` atomically (temp file, rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as partial, h5py.File(partial, "w") as h5:
        h5.attrs["source"] = source.name
        h5.attrs["layout"] = source.layout
        h5.attrs["format_version"] = _FORMAT_VERSION
        for name, value in values.items():
            h5.create_dataset(name, data=np.asarray(value))


def read_converted(path):
    """`{variable path: array}` from a converted-cache file, or None if it is unusable."""
    values = {}
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format_version") != _FORMAT_VERSION:
                return None
            h5.visititems(
                lambda name, obj: (
                    values.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
    except OSError:
        return None
    return values
