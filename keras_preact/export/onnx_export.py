"""Optional ONNX export (needs the `onnx` extra: tf2onnx, onnxruntime).

The artifact takes raw RGB pixels `image` float32 `[N, H, W, 3]` in [0, 255]
(any H/W where the model allows) and returns `probabilities`.

Why not `model.export(path, format="onnx")` as is: Keras 3.15 hands tf2onnx a
concrete function in which the fixed mean/std of the model's `Normalization`
layer are captured tensors, and tf2onnx turns those into extra required graph
inputs (`.../preprocessing_1/Sub/y:0`), so the file cannot be run with just an
image. Here the same converter (tf2onnx, with Keras' numpy-2 patch) gets the
function after `convert_variables_to_constants_v2`, which folds variables and
captured constants into the graph.

>>> export_onnx(model, "exported/onnx/preact/1/model.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import tensorflow as tf

from keras_preact.export import verify as verify_lib
from keras_preact.preprocessing import normalization_stats
from keras_preact.run_dir import atomic_path

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


def available():
    """True when tf2onnx and onnxruntime import."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def require():
    """Raises ImportError with the install command when the ONNX extra is missing."""
    if not available():
        raise ImportError(
            "ONNX export needs tf2onnx and onnxruntime: pip install 'keras-preact[onnx]' "
            "(or pip install tf2onnx onnxruntime)."
        )


def export_onnx(model, path, normalization=None, opset=None):
    """Writes `model` (float32, raw-pixel input) as an ONNX file at `path`; returns `path`.

    The file is written beside `path` first and renamed into place.
    """
    require()
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    height, width = model.inputs[0].shape[1:3]
    spec = tf.TensorSpec([None, height, width, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(image):
        x = image
        if normalization is not None:
            mean, std = normalization_stats(normalization)
            x = (x - mean) / std
        return tf.identity(tf.cast(model(x, training=False), tf.float32), name=OUTPUT_NAME)

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    _patch_tf2onnx()
    with atomic_path(path) as tmp:
        tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            input_names=inputs,
            output_names=outputs,
            opset=opset,
            tensors_to_rename={inputs[0]: INPUT_NAME, outputs[0]: OUTPUT_NAME},
            output_path=tmp,
        )
    return path


def _patch_tf2onnx():
    # tf2onnx 1.17 still uses numpy aliases removed in numpy 2; Keras ships the patch.
    import logging

    import tf2onnx

    tf2onnx.logging.set_level(logging.ERROR)
    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()


def verify_onnx(path, reference, crops, image_names=None, latency_runs=20, tolerance=1e-4):
    """Report for an ONNX file run with onnxruntime (CPU) against Keras `reference` probabilities."""
    require()
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        path, sess_options=options, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    if names != [INPUT_NAME]:
        raise verify_lib.VerificationError(f"ONNX inputs are {names}, expected [{INPUT_NAME!r}].")
    probabilities = np.concatenate(
        [session.run([OUTPUT_NAME], {INPUT_NAME: crops[i : i + 1]})[0] for i in range(len(crops))]
    )
    times = []
    for i in range(latency_runs + 2):
        start = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: crops[:1]})
        if i >= 2:
            times.append(time.perf_counter() - start)
    checks = verify_lib.compare(reference, probabilities)
    return {
        "artifact": os.path.abspath(path),
        "format": "onnx",
        "runtime": f"onnxruntime {onnxruntime.__version__} (CPU, 1 thread)",
        "inputs": [
            {"name": i.name, "shape": [str(d) for d in i.shape], "type": i.type}
            for i in session.get_inputs()
        ],
        "image_names": list(image_names or []),
        "checks": checks,
        "size_bytes": os.path.getsize(path),
        "latency_batch1": dict(verify_lib.latency_summary(times), threads=1),
        "tolerance": tolerance,
        "passed": checks["max_abs_diff"] <= tolerance and checks["top1_agreement"] == 1.0,
    }
