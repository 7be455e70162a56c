"""TFLite artifacts (float32, float16, dynamic-range int8, full-integer int8) and their checks.

Every variant takes raw RGB pixels of one eval crop, `[1, crop, crop, 3]` in
[0, 255], and returns the probabilities `[1, classes]`; the model's
normalisation is inside. Variants:

* `float32`: no quantization.
* `float16`: float16 weights (the CPU interpreter computes in float32).
* `dynamic_int8`: int8 weights, activations quantized on the fly.
* `int8`: full-integer with a representative dataset: uint8 input (the raw
  pixel values), uint8 output (probabilities scaled by the output's
  quantization parameters), int8 ops with per-channel weights inside.

The models run in `ai_edge_litert.interpreter.Interpreter` (the maintained
runtime; `tf.lite.Interpreter` is deprecated), whose default XNNPACK delegate
runs the float and the int8 (QS8) ops alike; int8 is fast only there (on the
interpreter's own kernels an int8 ResNet is slower than float32 on XNNPACK).
Two conversion-time rewrites keep the networks on the delegate (the model
itself is left unchanged):

* a strided unit's shortcut subsample (`x[:, ::s, ::s, :]`, a STRIDED_SLICE that
  XNNPACK does not take, which splits the graph into partitions) feeding a 1x1
  projection becomes that convolution's stride: the same numbers, and every op
  of a float model is delegated (`_fold_strided_subsamples`);
* the -inf padding of `SymmetricMaxPooling2D` (timm/fb layouts) becomes
  edge-replicating padding, exact for max pooling, so int8 calibration does
  not see -inf (which gave a quantization scale of ~1e36 and an interpreter
  that aborts the process on `allocate_tensors`).

What the delegate leaves to the interpreter in int8 is small: the uint8 <->
int8 QUANTIZE of the input and output and the 1,000-way SOFTMAX.

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
from keras import ops

from keras_preact import console
from keras_preact.data.crops import eval_crop
from keras_preact.export import verify as verify_lib
from keras_preact.layers import SymmetricMaxPooling2D, subsample_by_slicing
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
    model = _without_infinite_padding(model)

    def serve(image):
        x = image
        if normalization is not None:
            mean, std = normalization_stats(normalization)
            x = (x - mean) / std
        return {"probabilities": tf.cast(model(x, training=False), tf.float32)}

    with subsample_by_slicing(model):  # folded into the projection convs by the converter
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serve, input_signature=[spec])
        archive.write_out(directory, verbose=False)


class _EdgePaddedMaxPooling2D(SymmetricMaxPooling2D):
    """`SymmetricMaxPooling2D` with the padding replicating the edge instead of -inf.

    Exact when `2 * padding <= pool_size`: every window that reaches a padded
    position also holds the edge value that position copies. Used only for the
    conversion source: -inf would enter the int8 calibration ranges.
    """

    def call(self, inputs):
        p = self.padding
        padded = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="symmetric")
        return ops.max_pool(padded, self.pool_size, self.strides, padding="valid")


def _edge_padding_is_exact(layer):
    sizes = np.atleast_1d(layer.pool_size)
    return 0 < layer.padding and 2 * layer.padding <= int(sizes.min())


def _layers(model):
    """The layers of `model` and of the models nested in it."""
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _layers(layer)


def _without_infinite_padding(model):
    """`model`, or a functional copy sharing its layers whose -inf max-pool padding is edge padding.

    Models without such a layer, or that cannot be cloned (subclassed), come back as they are.
    """
    if not any(
        type(layer) is SymmetricMaxPooling2D and _edge_padding_is_exact(layer)
        for layer in _layers(model)
    ):
        return model

    def clone(layer):
        if type(layer) is SymmetricMaxPooling2D and _edge_padding_is_exact(layer):
            return _EdgePaddedMaxPooling2D.from_config(layer.get_config())
        return layer  # shared: same weights, no copy

    try:
        return keras.models.clone_model(model, clone_function=clone, recursive=True)
    except (ValueError, TypeError):
        return model


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
        data = converter.convert()
    return _fold_strided_subsamples(data)[0]


def _fold_strided_subsamples(data):
    """`(tflite bytes, count)`: STRIDED_SLICEs that only subsample H and W for 1x1 convs folded.

    `conv1x1(x[:, ::s, ::s, :])` is `conv1x1` with stride `s` on `x` (for SAME and
    VALID alike), so each such slice is removed and its consumers read its input
    with the stride. XNNPACK does not take the slice; the strided convolution it
    does, so the graph stays one delegate partition. Slices feeding anything else
    (an identity shortcut's addition) are kept.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python import schema_util
    from tensorflow.lite.tools import flatbuffer_utils

    root = schema.Model.GetRootAsModel(data, 0)
    if schema.BuiltinOperator.STRIDED_SLICE not in (
        schema_util.get_builtin_code_from_operator_code(root.OperatorCodes(i))
        for i in range(root.OperatorCodesLength())
    ):
        return data, 0  # nothing to fold: the weights are not unpacked
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    codes = [schema_util.get_builtin_code_from_operator_code(c) for c in model.operatorCodes]
    folded = 0
    for subgraph in model.subgraphs:
        consumers = {}
        for op in subgraph.operators:
            for index in op.inputs:
                consumers.setdefault(index, []).append(op)
        kept = []
        for op in subgraph.operators:
            convs = None
            if codes[op.opcodeIndex] == schema.BuiltinOperator.STRIDED_SLICE:
                convs = _foldable_convs(model, subgraph, codes, op, consumers)
            if not convs:
                kept.append(op)
                continue
            source, strides = op.inputs[0], _constant(model, subgraph, op.inputs[3])
            for conv in convs:
                conv.inputs[0] = source
                conv.builtinOptions.strideH = int(strides[1])
                conv.builtinOptions.strideW = int(strides[2])
            folded += 1
        subgraph.operators = kept
    if not folded:
        return data, 0
    # Operator codes no op uses any more (STRIDED_SLICE) go, so no resolver needs them.
    used = sorted({op.opcodeIndex for subgraph in model.subgraphs for op in subgraph.operators})
    renumbered = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            op.opcodeIndex = renumbered[op.opcodeIndex]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), folded


def _constant(model, subgraph, index):
    """Values of an int32/int64 constant tensor, or None."""
    from tensorflow.lite.python import schema_py_generated as schema

    tensor = subgraph.tensors[index]
    dtype = {schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64}
    raw = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    if tensor.type not in dtype or raw is None or not len(raw):
        return None
    return np.frombuffer(np.asarray(raw, np.uint8).tobytes(), dtype[tensor.type])


def _foldable_convs(model, subgraph, codes, op, consumers):
    """The 1x1 stride-1 CONV_2D consumers of a subsampling STRIDED_SLICE, or None if not foldable."""
    from tensorflow.lite.python import schema_py_generated as schema

    options = op.builtinOptions
    if options is None or options.ellipsisMask or options.newAxisMask or options.shrinkAxisMask:
        return None
    if getattr(options, "offset", False) or len(op.inputs) != 4:
        return None
    source, out = subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]]
    shape = source.shape
    begin, end, strides = (_constant(model, subgraph, i) for i in op.inputs[1:4])
    if (
        shape is None
        or len(shape) != 4
        or any(v is None or len(v) != 4 for v in (begin, end, strides))
    ):
        return None
    for axis in range(4):
        if not (options.beginMask >> axis & 1 or begin[axis] == 0):
            return None
        if not (options.endMask >> axis & 1 or end[axis] >= shape[axis]):
            return None
    if strides[0] != 1 or strides[3] != 1 or min(strides[1], strides[2]) < 1:
        return None
    if source.type != out.type or _quantization(source) != _quantization(out):
        return None
    if op.outputs[0] in subgraph.outputs:
        return None
    convs = consumers.get(op.outputs[0], [])
    for conv in convs:
        kernel = subgraph.tensors[conv.inputs[1]].shape
        options = conv.builtinOptions
        if (
            codes[conv.opcodeIndex] != schema.BuiltinOperator.CONV_2D
            or conv.inputs[0] != op.outputs[0]
            or op.outputs[0] in conv.inputs[1:]
            or kernel is None
            or tuple(kernel[1:3]) != (1, 1)
            or (options.strideH, options.strideW) != (1, 1)
        ):
            return None
    return convs


def _quantization(tensor):
    q = tensor.quantization
    if q is None or q.scale is None:
        return None
    return (np.ravel(q.scale).tolist(), np.ravel(q.zeroPoint).tolist())


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

    def ops_outside_delegate(self):
        """Names of the ops the delegate (XNNPACK) left to the interpreter's own kernels.

        Read from the execution plan (`Interpreter._get_ops_details`, the nodes
        that each DELEGATE node replaced are the ones between its inputs and
        outputs); None when the interpreter does not expose it.
        """
        try:
            nodes = self.interpreter._get_ops_details()
        except Exception:  # a private API: a runtime without it just has no answer
            return None
        delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
        producer = {t: n for n in nodes if n["op_name"] != "DELEGATE" for t in n["outputs"]}
        replaced = set()
        for delegate in delegates:
            inputs, pending = set(delegate["inputs"]), list(delegate["outputs"])
            while pending:
                node = producer.get(pending.pop())
                if node is None or node["index"] in replaced:
                    continue
                replaced.add(node["index"])
                pending.extend(t for t in node["inputs"] if t not in inputs)
        return [
            n["op_name"] for n in nodes if n["op_name"] != "DELEGATE" and n["index"] not in replaced
        ]

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
