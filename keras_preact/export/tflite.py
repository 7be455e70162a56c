"""TFLite artifacts (float32, float16, dynamic-range int8, full-integer int8) and their checks.

Every variant takes raw RGB pixels of one eval crop, `[1, crop, crop, 3]` in
[0, 255], and returns the probabilities `[1, classes]`; the model's
normalisation is inside. Variants:

* `float32`: no quantization.
* `float16`: float16 weights (the CPU interpreter computes in float32).
* `dynamic_int8`: int8 weights, activations quantized on the fly.
* `int8`: full-integer with a representative dataset: uint8 input (the raw
  pixel values), uint8 output (probabilities scaled by the output's
  quantization parameters), int8 ops only.

The models run in `ai_edge_litert.interpreter.Interpreter` (the maintained
runtime; `tf.lite.Interpreter` is deprecated).

>>> data = convert(model, "float16", crop_size=224)  # doctest: +SKIP
>>> TFLiteRunner(data).predict(crops).shape  # doctest: +SKIP
(12, 1000)
"""

from __future__ import annotations

import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_preact import console
from keras_preact.data.crops import eval_crop
from keras_preact.export import verify as verify_lib
from keras_preact.preprocessing import normalization_stats

VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
FLOAT32_TOLERANCE = 1e-4


def _write_source(model, directory, crop_size, normalization=None):
    """Writes the conversion source: a SavedModel whose one signature is pixels -> probabilities.

    Converting from a SavedModel (as `model.export(format="litert")` does) freezes the
    Keras variables; a concrete function of a Keras 3 model would keep them as
    resource variables that the interpreter cannot read.
    """
    spec = tf.TensorSpec([1, crop_size, crop_size, 3], tf.float32, name="image")

    def serve(image):
        x = image
        if normalization is not None:
            mean, std = normalization_stats(normalization)
            x = (x - mean) / std
        return {"probabilities": tf.cast(model(x, training=False), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.write_out(directory, verbose=False)


def representative_images(source, crop_size, resize_size=None, limit=100, interpolation="bilinear"):
    """Eval crops for int8 calibration, float32 `[n, crop, crop, 3]` in [0, 255].

    `source` is a folder of images (or anything `verify.load_images` takes), a
    `tf.data.Dataset` from the training pipeline yielding images or
    `(images, labels)`, batched or not, or an array of images. Images whose size
    is not the crop are eval-cropped. At most `limit` images are taken.
    """
    if isinstance(source, tf.data.Dataset):
        images = []
        for element in source:
            batch = element[0] if isinstance(element, (tuple, list)) else element
            if isinstance(batch, dict):
                batch = next(iter(batch.values()))
            batch = np.asarray(batch)
            images.extend(batch if batch.ndim == 4 else [batch])
            if len(images) >= limit:
                break
    elif isinstance(source, np.ndarray):
        images = list(source if source.ndim == 4 else [source])
    else:
        crops = verify_lib.eval_crops(
            verify_lib.load_images(source, limit=limit), crop_size, resize_size, interpolation
        )
        return crops.astype(np.float32)
    images = images[:limit]
    if not images:
        raise ValueError("The representative dataset yielded no images.")
    out = []
    for image in images:
        image = np.asarray(image)
        if image.shape[:2] != (crop_size, crop_size):
            image = eval_crop(image, crop_size, resize_size, interpolation).numpy()
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        out.append(image.astype(np.float32))
    return np.stack(out)


def convert(model, variant, crop_size, representative=None, normalization=None):
    """Converts a float32 Keras model to TFLite bytes for one of `VARIANTS`.

    `representative` (float32 crops from `representative_images`) is required for
    `"int8"`.
    """
    return convert_all(model, [variant], crop_size, representative, normalization)[variant]


def convert_all(model, variants, crop_size, representative=None, normalization=None):
    """`{variant: tflite bytes}` for several variants, from one conversion source."""
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"Unknown TFLite variant {variant!r}. Allowed values: {VARIANTS}.")
    if "int8" in variants and (representative is None or not len(representative)):
        raise ValueError(
            "Full-integer int8 needs a representative dataset: pass calibration images "
            "(--calibration_images=DIR) or drop int8 from --tflite."
        )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "source")
        _write_source(model, source, crop_size, normalization)
        for variant in variants:
            results[variant] = _convert(source, variant, representative)
    return results


def _convert(source, variant, representative):
    converter = tf.lite.TFLiteConverter.from_saved_model(source)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        samples = np.asarray(representative, np.float32)

        def dataset():
            for sample in samples:
                yield [sample[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    with console.command_line_quiet():  # the converter prints its settings to stderr
        return converter.convert()


class TFLiteRunner:
    """Runs a TFLite model on float32 pixel crops with ai-edge-litert, one image at a time.

    Quantized inputs and outputs are (de)quantized with the tensors' own
    parameters, so every variant is called the same way.
    """

    def __init__(self, model, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter

        source = {"model_path": os.fspath(model)}
        if isinstance(model, (bytes, bytearray)):
            source = {"model_content": bytes(model)}
        with console.command_line_quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
            self.interpreter = Interpreter(**source, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.num_threads = num_threads

    def _quantize(self, image):
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return image.astype(np.float32)
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(image / scale + zero_point), info.min, info.max).astype(dtype)

    def _dequantize(self, values):
        if self.output["dtype"] == np.float32:
            return values.astype(np.float32)
        scale, zero_point = self.output["quantization"]
        return (values.astype(np.float32) - zero_point) * scale

    def invoke(self, image):
        """Probabilities for one float32 `[crop, crop, 3]` image."""
        self.interpreter.set_tensor(self.input["index"], self._quantize(image[None]))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self.output["index"]))[0]

    def predict(self, images):
        """Probabilities `[N, classes]` for float32 `[N, crop, crop, 3]`."""
        return np.stack([self.invoke(image) for image in images])

    def latency(self, image, runs=20, warmup=2):
        """Batch-1 latency summary (set_tensor + invoke + get_tensor) over `runs` calls."""
        for _ in range(warmup):
            self.invoke(image)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.invoke(image)
            times.append(time.perf_counter() - start)
        return verify_lib.latency_summary(times)


def verify_tflite(
    path,
    variant,
    reference,
    crops,
    image_names=None,
    num_threads=1,
    latency_runs=20,
    tolerance=FLOAT32_TOLERANCE,
):
    """Report for one TFLite file: agreement with the Keras `reference` probabilities on `crops`.

    Only float32 is held to a tolerance (`max |delta| <= tolerance` and top-1 on
    every image); the others' figures are recorded.
    """
    runner = TFLiteRunner(path, num_threads=num_threads)
    probabilities = runner.predict(crops)
    report = {
        "artifact": os.path.abspath(path),
        "format": "tflite",
        "variant": variant,
        "runtime": "ai_edge_litert.interpreter.Interpreter",
        "input": _tensor_info(runner.input),
        "output": _tensor_info(runner.output),
        "image_names": list(image_names or []),
        "checks": verify_lib.compare(reference, probabilities),
        "size_bytes": os.path.getsize(path),
        "latency_batch1": dict(runner.latency(crops[0], runs=latency_runs), threads=num_threads),
    }
    if variant == "float32":
        checks = report["checks"]
        report["tolerance"] = tolerance
        report["passed"] = checks["max_abs_diff"] <= tolerance and checks["top1_agreement"] == 1.0
    return report


def _tensor_info(detail):
    scale, zero_point = detail["quantization"]
    return {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }
