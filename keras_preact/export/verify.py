"""Verification of exported artifacts against the Keras model, on real images.

Each check computes the Keras model's probabilities on the eval crops of real
photos and compares an artifact's outputs on the same images: max |delta| of
the probabilities, top-1 agreement, plus the artifact's size and batch-1
latency. Reports are JSON files written beside the artifacts.

* `verify_saved_model` loads the SavedModel in a separate, fresh Python
  process (`keras_preact/export/load_check.py`, which never imports keras_preact) and, with
  `saved_model_cli run`, through the session-based loader the server uses.
* `verify_tflite` (in `keras_preact.export.tflite`) and `verify_onnx` (in `keras_preact.export.onnx_export`)
  run the artifacts in their runtimes and use `compare` from here.

The default images are the sample photos that scikit-learn ships (and
scikit-image's, when installed), so verification needs no download.

>>> images = sample_images()  # doctest: +SKIP
>>> report = verify_saved_model("exported/preact/1", model, images, labels)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from keras_preact.data.crops import decode_image, eval_crop
from keras_preact.preprocessing import preprocess_input

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
SAVED_MODEL_TOLERANCE = 1e-5
# A bfloat16 SavedModel's probabilities against the float32 Keras model's: bfloat16
# keeps 8 significant bits, so logits move by about 1% (benchmarks/serving_latency.py
# measures the difference on photos).
BFLOAT16_TOLERANCE = 0.05

# Photos shipped by scikit-image (gray ones come out as RGB; the GIF is tiny and animated).
_SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "ihc.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "no_time_for_that_tiny.gif",
)


class VerificationError(RuntimeError):
    """An exported artifact disagrees with the Keras model beyond its tolerance."""


def sample_images():
    """Real photos shipped inside installed packages, as `[(name, encoded_bytes)]`.

    scikit-learn's `china.jpg` and `flower.jpg`, plus a dozen scikit-image
    photos (PNG, JPEG, GIF) when scikit-image is installed.
    """
    import sklearn.datasets

    paths = [
        os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", name)
        for name in ("china.jpg", "flower.jpg")
    ]
    try:
        import skimage.data

        folder = os.path.dirname(skimage.data.__file__)
        paths += [os.path.join(folder, name) for name in _SKIMAGE_PHOTOS]
    except ImportError:
        pass
    return [(os.path.basename(p), _read(p)) for p in paths if os.path.isfile(p)]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def load_images(source=None, limit=None):
    """`[(name, bytes)]` from a folder (searched recursively), a file, or a list of files.

    None means `sample_images()`; a list of `(name, bytes)` pairs passes through.
    Only JPEG, PNG, GIF and BMP files are taken from folders.
    """
    if source is None:
        images = sample_images()
    elif isinstance(source, (list, tuple)) and source and isinstance(source[0], tuple):
        images = list(source)
    else:
        items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        images = []
        for item in map(os.fspath, items):
            if os.path.isdir(item):
                for root, _, files in sorted(os.walk(item)):
                    for f in sorted(files):
                        if f.lower().endswith(IMAGE_EXTENSIONS):
                            path = os.path.join(root, f)
                            images.append((os.path.relpath(path, item), _read(path)))
            elif os.path.isfile(item):
                images.append((os.path.basename(item), _read(item)))
            else:
                raise FileNotFoundError(f"No image file or folder at {item!r}.")
    if not images:
        raise ValueError(
            f"No JPEG, PNG, GIF or BMP images found in {source!r}; give a folder of photos."
        )
    return images[:limit] if limit else images


def eval_crops(images, crop_size, resize_size=None, interpolation="bilinear"):
    """float32 `[N, crop, crop, 3]`: each image decoded and eval-cropped (as the signature does)."""
    return np.stack(
        [
            eval_crop(decode_image(data), crop_size, resize_size, interpolation).numpy()
            for _, data in images
        ]
    )


def keras_probabilities(model, pixels, batch_size=16):
    """The Keras model's float32 probabilities on raw pixels, in batches."""
    outputs = [
        np.asarray(model(pixels[i : i + batch_size], training=False), np.float32)
        for i in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(outputs)


def compare(reference, candidate):
    """max/mean |delta| of probabilities and top-1 agreement of `candidate` vs `reference`."""
    reference = np.asarray(reference, np.float32)
    candidate = np.asarray(candidate, np.float32)
    if reference.shape != candidate.shape:
        raise VerificationError(
            f"Output shape {candidate.shape} differs from the Keras model's {reference.shape}."
        )
    delta = np.abs(reference - candidate)
    agree = reference.argmax(-1) == candidate.argmax(-1)
    return {
        "images": int(len(reference)),
        "max_abs_diff": float(delta.max()),
        "mean_abs_diff": float(delta.mean()),
        "top1_agreement": float(agree.mean()),
        "top1_agreements": int(agree.sum()),
    }


def latency_summary(seconds):
    """Median, p90 and mean of per-call times, in milliseconds."""
    ms = np.asarray(seconds, np.float64) * 1000.0
    return {
        "runs": int(len(ms)),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
    }


def directory_size(path):
    """Total bytes of the files under `path`."""
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def _versions():
    import keras

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def _pack_bytes(items):
    """List of bytes -> (uint8 blob, int64 offsets): survives .npz without pickle or NUL stripping."""
    offsets = np.cumsum([0] + [len(b) for b in items]).astype(np.int64)
    blob = np.frombuffer(b"".join(items), np.uint8) if items else np.zeros(0, np.uint8)
    return blob, offsets


def run_in_fresh_process(version_dir, images, pixels, timeout=300):
    """Runs `keras_preact/export/load_check.py` in a new `python -I` process; returns its outputs dict."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "load_check.py")
    encoded = [data for _, data in images]
    bad = [encoded[0], b"this is not an image"]
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "outputs.npz")
        blob, offsets = _pack_bytes(encoded)
        bad_blob, bad_offsets = _pack_bytes(bad)
        np.savez(
            inputs,
            image_bytes=blob,
            image_offsets=offsets,
            bad_image_bytes=bad_blob,
            bad_image_offsets=bad_offsets,
            pixels=pixels,
        )
        _run([sys.executable, "-I", script, version_dir, inputs, outputs], timeout)
        with np.load(outputs) as data:
            return {key: data[key] for key in data.files}


def _run(command, timeout):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise VerificationError(
            f"{' '.join(command[:3])} ... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return proc


def run_saved_model_cli(
    version_dir, images, signature="serving_default", max_images=16, timeout=300
):
    """`saved_model_cli run` (session-based loading, like TF Serving) on encoded images.

    The images go in as a `.npy` of fixed-width bytes, which cannot end in NUL
    bytes; images that do (some BMPs) are skipped. One batch of at most
    `max_images`. Returns `(outputs, used_names)`.
    """
    used = [(name, data) for name, data in images if not data.endswith(b"\0")][:max_images]
    with tempfile.TemporaryDirectory() as tmp:
        npy = os.path.join(tmp, "image_bytes.npy")
        np.save(npy, np.array([data for _, data in used]))
        outdir = os.path.join(tmp, "out")
        command = [
            sys.executable,
            "-m",
            "tensorflow.python.tools.saved_model_cli",
            "run",
            "--dir",
            version_dir,
            "--tag_set",
            "serve",
            "--signature_def",
            signature,
            "--inputs",
            f"image_bytes={npy}",
            "--outdir",
            outdir,
        ]
        _run(command, timeout)
        # saved_model_cli saves string outputs as object arrays; these files are our own.
        outputs = {
            f[: -len(".npy")]: np.load(os.path.join(outdir, f), allow_pickle=True)
            for f in os.listdir(outdir)
        }
    return outputs, [name for name, _ in used]


def verify_saved_model(
    version_dir,
    model,
    images,
    labels,
    crop_size,
    resize_size=None,
    normalization=None,
    tolerance=SAVED_MODEL_TOLERANCE,
    saved_model_cli=True,
    interpolation="bilinear",
):
    """Checks a SavedModel version against the Keras `model`; returns the report dict.

    Raises `VerificationError` when probabilities differ by more than
    `tolerance`, labels are not the names of the returned classes, the process
    that loaded it imported keras_preact, or a bad image did not give
    `InvalidArgumentError` (or poisoned the next request).
    """
    start = time.time()
    images = load_images(images)
    crops = eval_crops(images, crop_size, resize_size, interpolation)
    reference = keras_probabilities(model, normalize(crops, normalization))
    labels_array = np.asarray(labels, dtype=object)
    report = {
        "artifact": os.path.abspath(version_dir),
        "format": "saved_model",
        "image_names": [name for name, _ in images],
        "crop_size": int(crop_size),
        "resize_size": None if resize_size is None else int(resize_size),
        "interpolation": interpolation,
        "tolerance": tolerance,
        "size_bytes": directory_size(version_dir),
        "versions": _versions(),
    }
    failures = _check_fresh_process(
        report, version_dir, model, images, crops, reference, labels_array, normalization
    )
    if saved_model_cli:
        failures += _check_saved_model_cli(report, version_dir, images, reference, labels_array)
    report["passed"] = not failures
    report["failures"] = failures
    report["seconds"] = round(time.time() - start, 2)
    if failures:
        raise VerificationError(
            f"SavedModel {version_dir} failed verification: {'; '.join(failures)}.\n"
            + json.dumps(report, indent=2)
        )
    return report


def _names(values):
    return np.vectorize(lambda b: b.decode("utf-8"))(values)


def _check_fresh_process(
    report, version_dir, model, images, crops, reference, labels_array, normalization
):
    """`tf.saved_model.load` in a new process: every signature, a bad request, latency."""
    out = run_in_fresh_process(version_dir, images, crops)
    rounded = out["pixels_uint8/input_as_float"]
    reference_uint8 = keras_probabilities(model, normalize(rounded, normalization))
    checks = {
        "serving_default": compare(reference, out["serving_default/probabilities"]),
        "pixels": compare(reference, out["pixels/probabilities"]),
        "pixels_uint8": compare(reference_uint8, out["pixels_uint8/probabilities"]),
    }
    labels_match = all(
        np.array_equal(_names(out[f"{p}/labels"]), labels_array[out[f"{p}/classes"]])
        for p in ("serving_default", "pixels")
    )
    fresh = {
        "loader": "tf.saved_model.load in `python -I keras_preact/export/load_check.py`",
        "imported_keras_preact": bool(out["imported_keras_preact"]),
        "checks": checks,
        "labels_match_classes": bool(labels_match),
        "bad_request_error": str(out["bad_request_error"]),
        "after_bad_request_max_abs_diff": float(
            np.abs(out["after_bad/probabilities"] - out["serving_default/probabilities"]).max()
        ),
    }
    report["signatures"] = [str(s) for s in out["signature_names"]]
    report["fresh_process"] = fresh
    report["latency_batch1"] = latency_summary(out["latency_ms"] / 1000.0)
    failures = []
    max_diff = max(c["max_abs_diff"] for c in checks.values())
    if max_diff > report["tolerance"]:
        failures.append(f"probabilities differ by {max_diff:.3g} > {report['tolerance']:g}")
    if not fresh["labels_match_classes"]:
        failures.append("labels are not the names of the returned classes")
    if fresh["imported_keras_preact"]:
        failures.append("the loading process imported keras_preact")
    if not fresh["bad_request_error"].startswith("InvalidArgumentError"):
        failures.append("an undecodable image did not give InvalidArgumentError")
    if fresh["after_bad_request_max_abs_diff"] > 0:
        failures.append("the request after a bad one gave different results")
    return failures


def _check_saved_model_cli(report, version_dir, images, reference, labels_array):
    """`saved_model_cli run`, the session-based loader TF Serving uses, on the same images."""
    cli_out, used = run_saved_model_cli(version_dir, images)
    position = {name: i for i, (name, _) in enumerate(images)}
    index = [position[name] for name in used]
    cli = {
        "loader": "saved_model_cli run (session-based, like TF Serving)",
        "images": used,
        "checks": compare(reference[index], cli_out["probabilities"]),
        "labels_match_classes": bool(
            np.array_equal(_names(cli_out["labels"]), labels_array[cli_out["classes"]])
        ),
    }
    report["saved_model_cli"] = cli
    failures = []
    if cli["checks"]["max_abs_diff"] > report["tolerance"]:
        failures.append("saved_model_cli run: probabilities differ beyond tolerance")
    if not cli["labels_match_classes"]:
        failures.append("saved_model_cli run: labels do not match classes")
    return failures


def normalize(pixels, normalization):
    """`preprocess_input` for models without their own preprocessing layer; else unchanged."""
    if normalization is None:
        return pixels
    return preprocess_input(pixels, normalization)
