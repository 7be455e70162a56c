"""Loads an exported SavedModel in a fresh process, as a server would, and runs its signatures.

Run as a script with `python -I` (isolated: this folder is not on sys.path), so
the process imports only TensorFlow and NumPy, never `keras_preact` or Keras
model code:

    python -I keras_preact/export/load_check.py VERSION_DIR INPUTS.npz OUTPUTS.npz

INPUTS.npz holds `image_bytes` (encoded images as one uint8 buffer plus
`image_offsets`), `pixels` (float32 crops) and `bad_image_bytes` /
`bad_image_offsets` (a batch with one undecodable image). OUTPUTS.npz gets
each signature's outputs, the bad batch's error, a repeat of the good request
after it, batch-1 latency and whether `keras_preact` was ever imported.
"""

import sys
import time

import numpy as np
import tensorflow as tf


def unpack(blob, offsets):
    """uint8 buffer + offsets -> list of bytes (the inverse of verify._pack_bytes)."""
    data = blob.tobytes()
    return [data[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def _numpy(value):
    """Tensor -> numpy; strings as fixed-width bytes so .npz needs no pickle."""
    array = value.numpy()
    return array.astype(bytes) if array.dtype == object else array


def run(signature, batch_size=16, **inputs):
    """Calls a signature in batches of `batch_size`; concatenates each output."""
    ((name, values),) = inputs.items()
    chunks = [
        signature(**{name: tf.constant(values[i : i + batch_size])})
        for i in range(0, len(values), batch_size)
    ]
    return {key: np.concatenate([_numpy(c[key]) for c in chunks]) for key in chunks[0]}


def main(version_dir, inputs_path, outputs_path, latency_runs=10):
    inputs = np.load(inputs_path)
    loaded = tf.saved_model.load(version_dir)
    signatures = loaded.signatures
    result = {"signature_names": np.array(sorted(signatures.keys()))}

    image_bytes = unpack(inputs["image_bytes"], inputs["image_offsets"])
    out = run(signatures["serving_default"], image_bytes=image_bytes)
    for key, value in out.items():
        result[f"serving_default/{key}"] = value

    pixels = inputs["pixels"]
    for key, value in run(signatures["pixels"], pixels=pixels).items():
        result[f"pixels/{key}"] = value
    pixels_uint8 = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    out = run(signatures["pixels_uint8"], pixels=pixels_uint8)
    result["pixels_uint8/probabilities"] = out["probabilities"]
    result["pixels_uint8/input_as_float"] = pixels_uint8.astype(np.float32)

    # A bad image fails its own request with InvalidArgument; the next good one still runs.
    bad = tf.constant(unpack(inputs["bad_image_bytes"], inputs["bad_image_offsets"]))
    try:
        signatures["serving_default"](image_bytes=bad)
        result["bad_request_error"] = np.array("")
    except tf.errors.InvalidArgumentError as e:
        result["bad_request_error"] = np.array("InvalidArgumentError: " + e.message)
    again = run(signatures["serving_default"], image_bytes=image_bytes)
    result["after_bad/probabilities"] = again["probabilities"]

    one = tf.constant(image_bytes[:1])
    signatures["serving_default"](image_bytes=one)  # warm-up
    times = []
    for _ in range(latency_runs):
        start = time.perf_counter()
        signatures["serving_default"](image_bytes=one)
        times.append(time.perf_counter() - start)
    result["latency_ms"] = np.array(times) * 1000.0
    result["imported_keras_preact"] = np.array("keras_preact" in sys.modules)
    np.savez(outputs_path, **result)


if __name__ == "__main__":
    main(*sys.argv[1:4])
