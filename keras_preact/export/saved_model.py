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

A request with an image the decoders reject (not an image, truncated) fails
with `InvalidArgumentError` for that request only; see `docs/serving/README.md`
for the rule.

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

import os
import re
import shutil
import uuid

import keras
import tensorflow as tf
from absl import logging

from keras_preact import run_dir
from keras_preact.data.crops import decode_image, eval_crop
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


def _magic_ok(data):
    """True where a string starts like a JPEG, PNG, GIF or BMP file."""
    return tf.reduce_any(
        tf.stack(
            [
                tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff",
                tf.strings.substr(data, 0, 8) == b"\x89PNG\r\n\x1a\n",
                tf.strings.substr(data, 0, 4) == b"GIF8",
                tf.strings.substr(data, 0, 2) == b"BM",
            ]
        )
    )


_HEX = [f"{i:02x}" for i in range(256)]


def _leading_hex(data, count=8):
    """The first `count` bytes of a string tensor as hex ("ff d8 ff e0"): always ASCII.

    Raw bytes in an error message make the client's decode of the message fail
    (a UnicodeDecodeError instead of the InvalidArgumentError it expects).
    """
    raw = tf.io.decode_raw(tf.strings.substr(data, 0, count), tf.uint8)
    return tf.strings.reduce_join(tf.gather(_HEX, tf.cast(raw, tf.int32)), separator=" ")


def decode_and_crop(image_bytes, crop_size, resize_size=None, interpolation="bilinear"):
    """A batch of encoded images -> float32 `[N, crop, crop, 3]` eval crops, in-graph.

    Each image goes through `decode_image` and `eval_crop`, so the crop is the
    one the data pipeline evaluates on. An image that is not a JPEG, PNG, GIF or
    BMP raises `InvalidArgumentError` naming its index; a truncated or corrupt
    one raises the decoder's `InvalidArgumentError`.
    """
    count = tf.shape(image_bytes)[0]

    def one(args):
        data, index = args
        message = tf.strings.format(
            "image_bytes[{}] is not a JPEG, PNG, GIF or BMP image (its first bytes: {})",
            (index, _leading_hex(data)),
        )
        check = tf.debugging.Assert(_magic_ok(data), [message])
        with tf.control_dependencies([check]):
            image = decode_image(data)
        return eval_crop(image, crop_size, resize_size, interpolation)

    return tf.map_fn(
        one,
        (image_bytes, tf.range(count)),
        fn_output_signature=tf.TensorSpec([crop_size, crop_size, 3], tf.float32),
    )


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


def build_archive(
    model,
    labels,
    crop_size,
    resize_size=None,
    top_k=5,
    normalization=None,
    pixel_size=None,
    interpolation="bilinear",
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
    """
    if len(labels) != model.outputs[0].shape[-1]:
        raise ValueError(
            f"{len(labels)} labels for a model with {model.outputs[0].shape[-1]} classes."
        )
    height, width = pixel_size if pixel_size is not None else (None, None)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve_bytes(image_bytes):
        pixels = decode_and_crop(image_bytes, crop_size, resize_size, interpolation)
        return classifier_outputs(model, pixels, labels, top_k, normalization)

    def serve_pixels(pixels):
        return classifier_outputs(model, pixels, labels, top_k, normalization)

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
