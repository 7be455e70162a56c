"""Download public checkpoints once, verify them, and cache their conversion.

Files are downloaded (urllib, a timeout on every socket operation) into Keras'
cache (`$KERAS_HOME/keras_preact/downloads`, `~/.keras` by default) under a
temporary name that is renamed into place only after the download finished,
every announced byte arrived and its hash matched, or, where the publisher
pins none, its content reads as a whole file of its format (not an HTML page,
not cut short): an interrupted, short or corrupt download never leaves a file
that a later call would load. A failure names the HTTP status ("HTTP 404 Not
Found"), or why there was none (a refused connection, a timeout). The converted variables are
cached beside them (`.../keras_preact/converted/<source>.h5`, written the same
way) and later calls load that without touching the original.

`KERAS_PREACT_WEIGHTS_MIRROR`, when set, replaces every source's base URL:
the file is fetched from `<mirror>/<source.mirror_path>`, e.g.
`file:///srv/weights/timm/resnetv2_50.a1h_in1k/model.safetensors`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http
import http.client
import json
import os
import struct
import sys
import urllib.error
import urllib.request
import zipfile

import h5py
import numpy as np

from keras_preact.files import DiskFullError, atomic_path, disk_full_message, is_disk_full
from keras_preact.weights import convert

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


def _describe_failure(error):
    """Why a download failed, in words: the HTTP status ("404 Not Found"), else the reason."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason or _phrase(error.code)}".strip()
    if isinstance(error, (_Incomplete, _NotWhole)):
        return str(error)
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        if isinstance(reason, TimeoutError):
            return f"no answer within {TIMEOUT_S} s"
        return getattr(reason, "strerror", None) or str(reason)
    if isinstance(error, TimeoutError):
        return f"no answer within {TIMEOUT_S} s"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _phrase(code):
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return ""


class _Incomplete(OSError):
    """The server closed the connection before sending all the bytes it announced."""


def _hasher(file_hash, algorithm):
    """A hashlib object for the publisher's pinned hash (keras' "auto": sha256 for 64 hex digits)."""
    if algorithm == "auto":
        algorithm = "sha256" if len(file_hash) == 64 else "md5"
    return hashlib.new(algorithm)


def _download(url, target, file_hash, algorithm):
    """Streams `url` into `target`; the hex digest of what it wrote (None without a pinned hash).

    Raises `urllib.error.URLError` (HTTP errors included), `_Incomplete` when
    fewer bytes came than the server announced, or `OSError` from the write.
    """
    digest = _hasher(file_hash, algorithm) if file_hash else None
    request = urllib.request.Request(url, headers={"User-Agent": "keras-preact"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(target, "wb") as f:
        announced = response.headers.get("Content-Length")
        received = 0
        try:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                received += len(chunk)
                if digest is not None:
                    digest.update(chunk)
        except http.client.IncompleteRead as short:  # a chunked response cut short
            raise _Incomplete(
                f"HTTP {response.status} {response.reason}, but the connection closed after "
                f"{received + len(short.partial)} bytes, before the end of the response"
            ) from None
    if announced is not None and announced.isdigit() and received < int(announced):
        raise _Incomplete(
            f"HTTP {response.status} {response.reason}, but the connection closed after "
            f"{received} of the {announced} bytes announced"
        )
    return digest.hexdigest() if digest is not None else None


def fetch(source, notop=False):
    """Path of the source's checkpoint file in the cache, downloading and verifying it first.

    Raises `WeightsDownloadError` naming the URL, what went wrong (an HTTP
    status such as "HTTP 404 Not Found", a refused connection, a short read,
    a hash mismatch), the cache path and what to do instead (a local file, a
    mirror) when the download fails; nothing is left in the cache then.
    """
    url, mirror_path, file_hash = source_file(source, notop)
    final = downloaded_path(source, notop)
    if os.path.isfile(final):
        return final
    folder, name = os.path.split(final)
    partial = os.path.join(folder, f".{name}.{os.getpid()}.partial")
    os.makedirs(folder, exist_ok=True)
    print(f"Downloading the weights {source.name!r} from {url}", file=sys.stderr, flush=True)
    try:
        digest = _download(url, partial, file_hash, source.hash_algorithm)
        if file_hash and digest != file_hash.lower():
            raise _HashMismatch(f"its {source.hash_algorithm} is {digest}, not {file_hash}")
        if not file_hash and (why := _not_whole(partial, source.format)):
            raise _NotWhole(why)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        if not isinstance(error, Exception):
            raise  # KeyboardInterrupt and the like, after the cleanup
        if is_disk_full(error):
            raise DiskFullError(
                f"{disk_full_message(final, source.size_mb * 1e6 or None)} Nothing was cached.",
                final,
            ) from None
        if isinstance(error, _HashMismatch):
            what = "failed its hash check"
        elif isinstance(error, _NotWhole):
            what = f"did not download as a whole {source.format} file"
        else:
            what = "could not be downloaded"
        raise WeightsDownloadError(
            f"The weights {source.name!r} {what}: {url} ({_describe_failure(error)}). Nothing "
            f"was cached at {final}. Offline or behind a firewall? Download the file elsewhere "
            f"and pass its path (weights='/path/to/{os.path.basename(mirror_path)}'), put it "
            f"at {final}, or set {MIRROR_ENV} to a mirror that holds {mirror_path}."
        ) from None
    os.replace(partial, final)
    return final


class _HashMismatch(ValueError):
    """The downloaded file is not the one the publisher pinned."""


class _NotWhole(ValueError):
    """A download without a pinned hash is not a whole checkpoint of its format."""


def _not_whole(path, fmt):
    """Why the file at `path` is not a whole checkpoint of format `fmt`, or None.

    Without a pinned hash this is what keeps a wrong or cut-short download out
    of the cache: a file whose content is not of its format
    (`convert.detect_format`, which also opens HDF5 files and zip archives),
    such as an HTML page served with status 200, or a safetensors file
    shorter than its header says. A torch7 file or a legacy PyTorch pickle
    has no length to check; its conversion reads it whole.
    """
    try:
        found = convert.detect_format(path)
    except ValueError:  # no format's signature
        found, why = None, f"it does not start as a {fmt} file does"
    except (OSError, zipfile.BadZipFile) as error:  # an HDF5 file or zip archive that won't open
        found, why = None, f"it does not read as one ({type(error).__name__}: {error})"
    if found == fmt:
        return _safetensors_short(path) if fmt == "safetensors" else None
    with open(path, "rb") as f:
        if f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
            return "it is an HTML or XML page, not a checkpoint (a login, error or redirect page?)"
    return why if found is None else f"it is a {found} file, not a {fmt} one"


def _safetensors_short(path):
    """How a safetensors file falls short of its header (unreadable, or fewer bytes than it
    describes), or None."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        text = f.read(header_size)
    try:
        tensors = [t for key, t in json.loads(text).items() if key != "__metadata__"]
        expected = 8 + header_size + max((t["data_offsets"][1] for t in tensors), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        return f"its header does not read as one ({type(error).__name__}: {error})"
    if size != expected:
        return f"it has {size:,} bytes where its header describes {expected:,}"
    return None


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
