"""SavedModel for TF Serving: the signatures, versioned layout and atomic publishing.

Layout (TF Serving's): `<output_dir>/<model_name>/<version>/` with an integer
version. A version is written to a hidden temporary directory beside it
(`.tmp-<version>-<pid>-<random>`, a name the server ignores since it is not an
integer), checked, then renamed into place, so a server polling the base path
never sees a half-written version. An existing version is replaced only with
`overwrite=True`.

Signatures (all outputs: `probabilities` float32 `[N, classes]`, top-k
`classes` int64 `[N, k]`, `scores` float32 `[N, k]`, `labels` string `[N, k]`):

* `serving_default`: `image_bytes` string `[N]` (JPEG, PNG, GIF, BMP) ->
  in-graph decode, resize of the shorter side, centre crop
  (`keras_preact.data.crops.eval_crop`), the model's normalisation.
* `pixels`: float32 `[N, H, W, 3]` raw RGB in [0, 255], any H/W.
* `pixels_uint8`: the same in uint8.

A request with a bad image (not an image, rejected by its decoder as truncated or
corrupt, or over `MAX_PIXELS`) fails with `InvalidArgumentError` for that request
only, naming the first bad image's index (`image_bytes[3] ...`); see
`docs/serving/README.md` for the rule.

Example (`keras_preact.export.export_all` does this, verified, for a trained model):

>>> import os, tempfile, keras_preact
>>> model = keras_preact.ResNet20V2(classes=2, input_shape=(None, None, 3))
>>> archive = build_archive(model, ["cat", "dog"], crop_size=32)
>>> base = tempfile.mkdtemp()  # TF Serving's base path of the model
>>> staging = temporary_dir(base, 1)
>>> write_saved_model(archive, staging, ["cat", "dog"])
>>> version_dir = publish_dir(staging, os.path.join(base, "1"))
>>> versions(base)
[1]
"""

from __future__ import annotations

import math
import os
import re
import shutil
import uuid

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_preact import run_dir
from keras_preact.data.crops import decode_image, default_resize_size, eval_crop
from keras_preact.models.float32 import policy_copy
from keras_preact.preprocessing import normalization_stats

SIGNATURE_BYTES = "serving_default"
SIGNATURE_PIXELS = "pixels"
SIGNATURE_PIXELS_UINT8 = "pixels_uint8"
INPUT_BYTES = "image_bytes"
INPUT_PIXELS = "pixels"
OUTPUTS = ("probabilities", "classes", "scores", "labels")
LABELS_ASSET = os.path.join("assets.extra", run_dir.LABELS)
REPORT_ASSET = os.path.join("assets.extra", "verification.json")
# TF Serving replays these requests when it loads a version, before serving it, so the
# first real request does not pay for graph warm-up.
WARMUP_ASSET = os.path.join("assets.extra", "tf_serving_warmup_requests")

_TMP_PATTERN = re.compile(r"^\.tmp-(\d+)-(\d+)-[0-9a-f]+$")
_TRASH_PATTERN = re.compile(r"^\.old-(\d+)-(\d+)-[0-9a-f]+$")


# Each format's leading bytes, in the order of `_declared_size`'s branches.
_MAGICS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")  # JPEG, PNG, GIF, BMP

MAX_PIXELS = 1 << 26
"""The most pixels `serving_default` takes from one image (8192 x 8192; a 64-megapixel
photo fits), decoded and also once resized for its crop (so a 1 x 30000 image, whose
resized copy would be 256 x 7.7 million, is refused). JPEG, PNG and BMP are checked on
their header, before decoding; GIF, sized by its frames, once decoded."""

# Why an image is refused (0: it is not).
_OK, _NOT_AN_IMAGE, _UNDECODABLE, _BAD_SIZE = 0, 1, 2, 3


def _formats(data):
    """Bools `[..., 4]`: whether strings start like a JPEG, PNG, GIF or BMP file."""
    return tf.stack([tf.strings.substr(data, 0, len(magic)) == magic for magic in _MAGICS], -1)


def _magic_ok(data):
    """True where a string starts like a JPEG, PNG, GIF or BMP file."""
    return tf.reduce_any(_formats(data), axis=-1)


_HEX = [f"{i:02x}" for i in range(256)]


def _leading_hex(data, count=8):
    """The first `count` bytes of a string tensor as hex ("ff d8 ff e0"): always ASCII.

    Raw bytes in an error message make the client's decode of the message fail
    (a UnicodeDecodeError instead of the InvalidArgumentError it expects).
    """
    raw = tf.io.decode_raw(tf.strings.substr(data, 0, count), tf.uint8)
    return tf.strings.reduce_join(tf.gather(_HEX, tf.cast(raw, tf.int32)), separator=" ")


def _declared_size(data):
    """`(height, width)` an image's header declares, read without decoding the image.

    JPEG: its frame header; PNG: IHDR; BMP: the info header (a negative height is
    a top-down image). GIF: `(1, 1)`, as TensorFlow sizes a GIF by its frames.
    Raises `InvalidArgumentError` for a header too short or malformed to read.
    """

    def pair(offset, little_endian):
        raw = tf.strings.substr(data, offset, 8)
        return tf.ensure_shape(tf.io.decode_raw(raw, tf.int32, little_endian=little_endian), [2])

    branches = [
        lambda: tf.image.extract_jpeg_shape(data)[:2],
        lambda: tf.reverse(pair(16, little_endian=False), [0]),
        lambda: tf.ones([2], tf.int32),
        lambda: tf.abs(tf.reverse(pair(18, little_endian=True), [0])),
    ]
    fmt = tf.argmax(tf.cast(_formats(data), tf.int32), output_type=tf.int32)  # 0 if none
    return tf.switch_case(fmt, branches)


def _within_limits(size, resize_size):
    """Whether `(height, width)` has pixels and at most `MAX_PIXELS`, also once resized
    to a shorter side of `resize_size` (about `resize_size**2 * long / short` pixels)."""
    short = tf.cast(tf.reduce_min(size), tf.float64)
    long = tf.cast(tf.reduce_max(size), tf.float64)
    resized_ok = resize_size * resize_size * long <= MAX_PIXELS * short
    return (short >= 1) & (short * long <= MAX_PIXELS) & resized_ok


def _crop_within_limits(data, crop_size, resize_size, interpolation):
    """`(crop, (height, width), fits)` of one encoded image, `fits` meaning within `MAX_PIXELS`.

    An image whose header declares too many pixels is not decoded; its crop is zeros,
    as is the crop of one found too large once decoded (a GIF). Raises
    `InvalidArgumentError` when the header cannot be read or a decoder rejects the image.
    """
    declared = _declared_size(data)
    image = tf.cond(
        _within_limits(declared, resize_size),
        lambda: decode_image(data),
        lambda: tf.zeros([0, 0, 3], tf.uint8),
    )
    size = tf.where(tf.size(image) > 0, tf.shape(image)[:2], declared)
    fits = _within_limits(size, resize_size)
    crop = tf.cond(
        fits,
        lambda: eval_crop(image, crop_size, resize_size, interpolation),
        lambda: tf.zeros([crop_size, crop_size, 3]),
    )
    return crop, size, fits


def _stacked(dataset, count):
    """Every element of a dataset of at most `count` elements, stacked (empty if none)."""
    empty = tf.nest.map_structure(
        lambda spec: tf.zeros([0, *spec.shape], spec.dtype), dataset.element_spec
    )
    batches = dataset.batch(tf.cast(count, tf.int64) + 1)
    return batches.concatenate(tf.data.Dataset.from_tensors(empty)).take(1).get_single_element()


def _check_images(image_bytes, status, sizes, resize_size):
    """An Assert that fails naming the first image (lowest index) whose status is not `_OK`."""
    count = tf.size(status)
    bad = tf.where(status == _OK, count, tf.range(count))
    first = tf.reduce_min(tf.concat([bad, [count]], 0))  # `count`: none
    # One past the end of each (no problem) so that the messages build for any batch.
    reason = tf.concat([status, [_OK]], 0)[first]
    leading = _leading_hex(tf.concat([image_bytes, [""]], 0)[first])
    height_width = tf.concat([sizes, [[0, 0]]], 0)[first]
    messages = [
        "",
        tf.strings.format(
            "image_bytes[{}] is not a JPEG, PNG, GIF or BMP image (its first bytes: {})",
            (first, leading),
        ),
        tf.strings.format(
            "image_bytes[{}] is a truncated or corrupt image: it does not decode "
            "(its first bytes: {})",
            (first, leading),
        ),
        tf.strings.format(
            "image_bytes[{}] has a size that is not served: {} x {} pixels (width x height; "
            "at least 1 x 1, at most {} pixels, also once resized to a shorter side of {})",
            (first, height_width[1], height_width[0], MAX_PIXELS, resize_size),
        ),
    ]
    return tf.debugging.Assert(reason == _OK, [tf.gather(tf.stack(messages), reason)])


def decode_and_crop(image_bytes, crop_size, resize_size=None, interpolation="bilinear"):
    """A batch of encoded images -> float32 `[N, crop, crop, 3]` eval crops, in-graph.

    Each image goes through `decode_image` and `eval_crop`, so the crop is the
    one the data pipeline evaluates on. A batch with a bad image raises
    `InvalidArgumentError` naming the first bad image's index and why: not a
    JPEG, PNG, GIF or BMP; rejected by its decoder (truncated, corrupt); or over
    `MAX_PIXELS`.
    """
    if resize_size is None:
        resize_size = default_resize_size(crop_size)
    count = tf.shape(image_bytes)[0]

    def one(data, index):
        crop, size, fits = _crop_within_limits(data, crop_size, resize_size, interpolation)
        return index, crop, size, tf.where(fits, _OK, _BAD_SIZE)

    # A decoder's error drops its image from the dataset: the missing indices did not decode.
    images = tf.data.Dataset.from_tensor_slices((image_bytes, tf.range(count)))
    images = images.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    done, crops, sizes, status = _stacked(images.ignore_errors(), count)
    status = tf.tensor_scatter_nd_update(tf.fill([count], _UNDECODABLE), done[:, None], status)
    status = tf.where(_magic_ok(image_bytes), status, _NOT_AN_IMAGE)
    sizes = tf.scatter_nd(done[:, None], sizes, [count, 2])
    with tf.control_dependencies([_check_images(image_bytes, status, sizes, resize_size)]):
        return tf.identity(crops)


def classifier_outputs(model, pixels, labels, top_k=5, normalization=None):
    """Runs `model` on raw float pixels; returns the signature's output dict.

    `normalization` is applied first only for a model built without its own
    preprocessing (`include_preprocessing=False`).
    """
    x = tf.cast(pixels, tf.float32)
    if normalization is not None:
        mean, std = normalization_stats(normalization)
        x = (x - mean) / std
    probabilities = tf.cast(model(x, training=False), tf.float32)
    k = min(int(top_k), len(labels))
    scores, classes = tf.math.top_k(probabilities, k=k)
    names = tf.gather(tf.constant(list(labels), dtype=tf.string), classes)
    return {
        "probabilities": probabilities,
        "classes": tf.cast(classes, tf.int64),
        "scores": scores,
        "labels": names,
    }


PRECISIONS = ("float32", "bfloat16")
# A graph (and so a frozen signature) is one protocol buffer, at most 2 GiB.
MAX_FROZEN_BYTES = 1 << 30


def _as_inference_call(function):
    """`function(x)` called as a Keras model is, `run(x, training=False)`."""

    def run(x, training=False):
        del training  # always inference
        return function(x)

    return run


def _jit_compiled(model):
    """`model`'s inference call as one XLA-compiled function, called as the model is."""
    return _as_inference_call(tf.function(lambda x: model(x, training=False), jit_compile=True))


def _frozen(model):
    """`model`'s inference call with its weights as graph constants, as float32 outputs.

    TensorFlow's graph optimiser then folds what depends on the weights alone
    (a bfloat16 model's casts of its float32 weights) once.
    """
    # The one public-enough way to freeze a function's variables (TensorFlow's own
    # converters use it); keras.export has none.
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    size = sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights)
    if size > MAX_FROZEN_BYTES:
        raise ValueError(
            f"frozen weights: {model.name!r} has {size / 2**30:.2f} GiB of weights, more than "
            f"the {MAX_FROZEN_BYTES / 2**30:g} GiB this export freezes into a graph (one "
            "protocol buffer, 2 GiB at most); export it in float32 without frozen_weights."
        )
    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32)
    function = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(spec))
    return _as_inference_call(lambda x: frozen(x)[0])


def build_archive(
    model,
    labels,
    crop_size,
    resize_size=None,
    top_k=5,
    normalization=None,
    pixel_size=None,
    interpolation="bilinear",
    jit_compile=False,
    frozen_weights=False,
    precision="float32",
):
    """A `keras.export.ExportArchive` with the three serving signatures.

    Args:
        model: float32 Keras model taking raw RGB `[N, H, W, 3]` in [0, 255]
            (see `keras_preact.export.model.float32_copy`).
        labels: class names, one per output index.
        crop_size, resize_size, interpolation: the `serving_default` eval crop
            (224 from shorter side 256, bilinear, by default; 320 from 320; a
            pretrained model's own protocol, `eval_preprocessing(model)`).
        top_k: how many classes/scores/labels each signature returns.
        normalization: only for models without their own preprocessing layer.
        pixel_size: fixed `(H, W)` for the pixel signatures when the model needs
            one; None for any H/W.
        jit_compile: run the model in the signatures as one XLA cluster
            (`tf.function(jit_compile=True)`; the decoding, top-k and labels
            stay outside it, as XLA has no string ops). The server then needs
            XLA's CPU/GPU JIT and compiles once per input shape. Off by default:
            `benchmarks/serving_latency.py` measures what it gives.
        frozen_weights: the weights as constants of the signatures' graphs,
            not variables (the SavedModel then has none): half the size (103
            against 207 MB for ResNet50V2), as fast in float32 on a CPU
            (within a few percent). For serving only; up to 1 GiB of weights.
        precision: "float32", or "bfloat16": the model computes in bfloat16
            (Keras' mixed_bfloat16 policy: float32 weights, batch-norm
            statistics, classifier and outputs), for CPUs with bfloat16
            instructions (AVX512-BF16, AMX) or GPUs; probabilities within
            `verify.BFLOAT16_TOLERANCE` of float32's. Implies `frozen_weights`
            unless `jit_compile`, so that the weights are cast to bfloat16
            once, when the graph is optimised, not on every request (a fifth
            of a ResNet-50 batch-1 call otherwise).
    """
    if len(labels) != model.outputs[0].shape[-1]:
        raise ValueError(
            f"{len(labels)} labels for a model with {model.outputs[0].shape[-1]} classes."
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision == "bfloat16":
        model = policy_copy(model, "mixed_bfloat16")
        frozen_weights = frozen_weights or not jit_compile
    if jit_compile and frozen_weights:
        raise ValueError("Choose jit_compile or frozen_weights: XLA compiles the variables' graph.")
    height, width = pixel_size if pixel_size is not None else (None, None)
    archive = keras.export.ExportArchive()
    if frozen_weights:
        run = _frozen(model)  # no variables to track
    else:
        archive.track(model)
        run = _jit_compiled(model) if jit_compile else model

    def serve_bytes(image_bytes):
        pixels = decode_and_crop(image_bytes, crop_size, resize_size, interpolation)
        return classifier_outputs(run, pixels, labels, top_k, normalization)

    def serve_pixels(pixels):
        return classifier_outputs(run, pixels, labels, top_k, normalization)

    archive.add_endpoint(
        SIGNATURE_BYTES,
        serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_BYTES)],
    )
    for name, dtype in ((SIGNATURE_PIXELS, tf.float32), (SIGNATURE_PIXELS_UINT8, tf.uint8)):
        archive.add_endpoint(
            name,
            serve_pixels,
            input_signature=[tf.TensorSpec([None, height, width, 3], dtype, name=INPUT_PIXELS)],
        )
    return archive


def versions(base_dir):
    """Integer versions present under a TF Serving base path, sorted."""
    if not os.path.isdir(base_dir):
        return []
    found = []
    for name in os.listdir(base_dir):
        if name.isdigit() and os.path.isdir(os.path.join(base_dir, name)):
            found.append(int(name))
    return sorted(found)


def next_version(base_dir):
    """The next free version: one more than the highest present, or 1."""
    present = versions(base_dir)
    return present[-1] + 1 if present else 1


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory):
    """Deletes temporary export directories left by processes that died (e.g. killed).

    Only hidden `.tmp-*` / `.old-*` names written by this module whose writer
    process no longer exists are removed; returns their names.
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        match = _TMP_PATTERN.match(name) or _TRASH_PATTERN.match(name)
        if match and not _pid_alive(int(match.group(2))):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            removed.append(name)
    return removed


def resolve_version(base_dir, version=None, overwrite=False):
    """Checks the target version; returns it (the next free one when None).

    Raises FileExistsError for an existing version unless `overwrite`.
    """
    if version is None:
        return next_version(base_dir)
    version = int(version)
    if version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}.")
    if os.path.exists(os.path.join(base_dir, str(version))) and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists in {base_dir}; it was left untouched. "
            "Pass overwrite=True (--overwrite) to replace it, or omit the version to "
            f"write the next free one ({next_version(base_dir)})."
        )
    return version


def temporary_dir(base_dir, version):
    """A fresh hidden directory beside the version, for writing it before the rename."""
    os.makedirs(base_dir, exist_ok=True)
    path = os.path.join(base_dir, f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    return path


def publish_dir(tmp_dir, final_dir, overwrite=False):
    """Renames a finished temporary directory into place.

    Without `overwrite`, an existing `final_dir` is never touched (FileExistsError).
    With it, the old directory is first renamed aside, then deleted after the
    new one is in place.
    """
    old = None
    if os.path.exists(final_dir):
        if not overwrite:
            raise FileExistsError(
                f"{final_dir} already exists and was left untouched (pass --overwrite)."
            )
        parent, name = os.path.split(final_dir)
        old = os.path.join(parent, f".old-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(final_dir, old)
    try:
        os.rename(tmp_dir, final_dir)
    except OSError:
        if old is not None:
            os.rename(old, final_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final_dir


def write_saved_model(archive, directory, labels, warmup_images=(), model_name=""):
    """Writes the archive as a SavedModel into `directory`, with `assets.extra/labels.txt`.

    With `warmup_images` (encoded bytes) and tensorflow-serving-api installed (the
    `serving` extra), also writes TF Serving's warm-up file: one `serving_default`
    request per image.
    """
    archive.write_out(directory, verbose=False)
    os.makedirs(os.path.join(directory, "assets.extra"), exist_ok=True)
    with open(os.path.join(directory, LABELS_ASSET), "w", encoding="utf-8") as f:
        f.write("".join(f"{label}\n" for label in labels))
    if warmup_images:
        write_warmup_requests(os.path.join(directory, WARMUP_ASSET), warmup_images, model_name)


def write_warmup_requests(path, images, model_name=""):
    """Writes `assets.extra/tf_serving_warmup_requests` (PredictionLog TFRecords); False if
    tensorflow-serving-api is not installed."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        logging.warning(
            "tensorflow-serving-api is not installed (pip install '.[serving]'): "
            "no TF Serving warm-up file written."
        )
        return False
    with tf.io.TFRecordWriter(path) as writer:
        for image in images:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = "serving_default"
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return True
