"""Batch-1 latency of the TFLite files against the SavedModel, and their top-1 agreement with Keras.

Builds a keras-preact model, writes it as the project's TF Serving SavedModel
(`keras_preact.export.saved_model`, loaded back with `tf.saved_model.load`
and called through its `pixels` signature: the peer), converts it with
`keras_preact.export.tflite` to float32, float16, dynamic-range int8 and
full-integer int8, and times single-image inference in one process, the
contenders alternating for `--rounds` rounds of `--runs` calls (TFLite in
`ai_edge_litert` with `--threads` threads and its default XNNPACK delegate,
TensorFlow limited to as many intra-op threads). Each figure is the median of
the contender's best round.

No trained ImageNet weights ship with the project, so by default the weights
are random (seeded) but made trained-like: BN statistics measured on random
crops of the sample photos that scikit-learn and scikit-image ship (so every BN
normalises what it sees, as after training) and the classifier fitted on those
crops to tell the photos apart (so outputs are peaked and the top-1 class
follows the image). `--weights` takes real weights instead (anything the
builders accept: a named source, a file). int8 is calibrated on
`--calibration_images` other random crops of the photos; top-1 agreement with
the Keras model is measured on the photos' centre crops. A random backbone is
more sensitive to int8 rounding than a trained one is likely to be, so its int8
agreement is no measurement of a trained model's.

STDOUT is one Markdown section (for BENCHMARKS.md); progress goes to STDERR.
Run from the repository root:

    python benchmarks/tflite_latency.py                       # ResNet50V2 at 224, ~3 min
    python benchmarks/tflite_latency.py --model=ResNet20V2 --crop_size=32 --runs=2 \\
        --rounds=1 --calibration_images=4                     # smoke test, seconds
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from contract import log, measure_bn_statistics, stdout_to_stderr, target_line  # noqa: E402

flags.DEFINE_string("model", "ResNet50V2", "keras-preact builder name")
flags.DEFINE_integer("crop_size", 224, "input size (the eval crop)")
flags.DEFINE_string("weights", "", "weights for the builder; empty: random, made trained-like")
flags.DEFINE_integer("threads", 2, "TFLite interpreter threads and TensorFlow intra-op threads")
flags.DEFINE_integer("runs", 10, "timed calls per contender per round")
flags.DEFINE_integer("rounds", 5, "alternating rounds")
flags.DEFINE_integer("calibration_images", 32, "int8 calibration crops")
flags.DEFINE_list("variants", ["float32", "float16", "dynamic_int8", "int8"], "TFLite variants")
flags.DEFINE_integer("seed", 0, "seed of the weights and the calibration crops")
FLAGS = flags.FLAGS

_FIT_CROPS_PER_PHOTO = 2  # trained-like init: random crops per photo for BN statistics and head
_LOGIT = 10.0  # trained-like classifier: logit of the photo's class on its crops
TARGET_VS_SAVED_MODEL = 0.5
TARGET_VS_FLOAT32 = 1.0
_FLAG_ORDER = (
    "model crop_size weights threads runs rounds calibration_images variants seed"
).split()


def _random_crops(photos, crop_size, count, rng):
    """`count` float32 crops of the photos unlike the eval crops: random scale and place, every
    other one flipped; crop `i` is of photo `i % len(photos)`."""
    from keras_preact.data.crops import decode_image

    images = [decode_image(data).numpy().astype(np.float32) for _, data in photos]
    crops = []
    for i in range(count):
        image = images[i % len(images)]
        short = min(image.shape[:2])
        side = int(rng.uniform(crop_size, 1.5 * crop_size))
        height = max(side, round(image.shape[0] * side / short))
        width = max(side, round(image.shape[1] * side / short))
        resized = tf.image.resize(image, (height, width)).numpy()
        top = rng.integers(0, height - crop_size + 1)
        left = rng.integers(0, width - crop_size + 1)
        crop = resized[top : top + crop_size, left : left + crop_size]
        crops.append(crop[:, ::-1] if i % 2 == 0 else crop)
    return np.clip(np.stack(crops), 0.0, 255.0)


def _make_trained_like(model, crops, photo_count):
    """BN statistics measured on `crops`; classifier fitted to tell the photos apart.

    `crops[i]` is a crop of photo `i % photo_count`. One training-mode call with
    momentum 0 sets every BN's statistics to the batch's, so each BN normalises
    what it sees, as after training. The classifier is then a ridge regression
    of the pooled features (centred) onto a logit of `_LOGIT` for the photo's
    class (photo k: class 71k mod classes), so the outputs are peaked and the
    top-1 class follows the image, as with a trained model.
    """
    import keras

    measure_bn_statistics(model, crops)
    head = model.get_layer("predictions")
    features = keras.Model(model.inputs, head.input)(crops).numpy().astype(np.float64)
    mean = features.mean(0)
    centred = features - mean
    classes = head.kernel.shape[-1]
    targets = np.zeros((len(crops), classes))
    targets[np.arange(len(crops)), (np.arange(len(crops)) % photo_count) * 71 % classes] = _LOGIT
    gram = centred @ centred.T
    ridge = 1e-2 * np.trace(gram) / len(crops)
    kernel = centred.T @ np.linalg.solve(gram + ridge * np.eye(len(crops)), targets)
    head.kernel.assign(kernel.astype(np.float32))
    head.bias.assign((-mean @ kernel).astype(np.float32))


def _saved_model(model, directory, crop_size):
    """The project's SavedModel of `model`, loaded back: `(call on one crop, size in bytes)`."""
    from keras_preact.export import saved_model as saved_model_lib
    from keras_preact.export import verify as verify_lib

    labels = [f"class_{i}" for i in range(model.outputs[0].shape[-1])]
    archive = saved_model_lib.build_archive(model, labels, crop_size)
    saved_model_lib.write_saved_model(archive, directory, labels)
    signature = tf.saved_model.load(directory).signatures[saved_model_lib.SIGNATURE_PIXELS]

    def call(image):
        return signature(pixels=tf.constant(image[None]))["probabilities"].numpy()[0]

    return call, verify_lib.directory_size(directory)


def _median_ms(call, image, runs):
    call(image)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(image)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _command_line():
    parts = ["python benchmarks/tflite_latency.py"]
    for name in _FLAG_ORDER:
        value = FLAGS[name].value
        if name == "weights" and not value:
            continue
        value = ",".join(value) if isinstance(value, list) else value
        parts.append(f"--{name}={value}")
    return " ".join(parts)


def measure():
    """Runs the benchmark; returns the Markdown section."""
    import keras

    import keras_preact
    from keras_preact.export import tflite as tflite_lib
    from keras_preact.export import verify as verify_lib

    unknown = sorted(set(FLAGS.variants) - set(tflite_lib.VARIANTS))
    if unknown:
        raise app.UsageError(f"Unknown --variants {unknown}; allowed: {tflite_lib.VARIANTS}.")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    except RuntimeError:  # TensorFlow already started: it keeps its default (all cores)
        log("TensorFlow already initialised: its intra-op threads are left at the default")
    rng = np.random.default_rng(FLAGS.seed)
    keras.utils.set_random_seed(FLAGS.seed)
    started = time.perf_counter()
    photos = verify_lib.sample_images()
    crops = verify_lib.eval_crops(photos, FLAGS.crop_size)
    calibration = _random_crops(photos, FLAGS.crop_size, FLAGS.calibration_images, rng)
    log(f"{FLAGS.model} at {FLAGS.crop_size}: building ({FLAGS.weights or 'trained-like init'})")
    model = getattr(keras_preact, FLAGS.model)(
        weights=FLAGS.weights or None, input_shape=(None, None, 3)
    )
    if not FLAGS.weights:
        fit = _random_crops(photos, FLAGS.crop_size, _FIT_CROPS_PER_PHOTO * len(photos), rng)
        _make_trained_like(model, fit, len(photos))
    reference = verify_lib.keras_probabilities(model, crops)

    with tempfile.TemporaryDirectory() as tmp:
        log("writing and loading the SavedModel")
        saved_model_call, saved_model_size = _saved_model(
            model, os.path.join(tmp, "saved_model"), FLAGS.crop_size
        )
        log(f"converting {', '.join(FLAGS.variants)} (int8: {len(calibration)} calibration crops)")
        representative = tflite_lib.representative_images(
            calibration, FLAGS.crop_size, limit=FLAGS.calibration_images
        )
        converted = tflite_lib.convert_all(model, FLAGS.variants, FLAGS.crop_size, representative)
        runners = {
            v: tflite_lib.TFLiteRunner(data, num_threads=FLAGS.threads)
            for v, data in converted.items()
        }
        contenders = {"SavedModel": saved_model_call}
        contenders.update({f"TFLite {v}": runner.invoke for v, runner in runners.items()})
        sizes = {"SavedModel": saved_model_size}
        sizes.update({f"TFLite {v}": len(data) for v, data in converted.items()})
        off_delegate = {
            f"TFLite {v}": runner.ops_outside_delegate() for v, runner in runners.items()
        }
        log("top-1 agreement with Keras")
        checks = {
            name: verify_lib.compare(reference, np.stack([call(c) for c in crops]))
            for name, call in contenders.items()
        }
        best = {name: float("inf") for name in contenders}
        for round_index in range(FLAGS.rounds):
            medians = {
                name: _median_ms(call, crops[0], FLAGS.runs) for name, call in contenders.items()
            }
            best = {name: min(best[name], ms) for name, ms in medians.items()}
            summary = ", ".join(f"{name} {ms:.1f}" for name, ms in medians.items())
            log(f"round {round_index + 1}/{FLAGS.rounds} medians (ms): {summary}")
    log(f"measured in {time.perf_counter() - started:.0f} s")
    return _report(best, sizes, checks, off_delegate, len(calibration))


def _report(best, sizes, checks, off_delegate, calibration_count):
    peer = best["SavedModel"]
    images = next(iter(checks.values()))["images"]
    weights = (
        f"weights `{FLAGS.weights}`"
        if FLAGS.weights
        else "random weights made trained-like, as no trained ImageNet weights are at hand: BN "
        f"statistics measured on {_FIT_CROPS_PER_PHOTO} random crops of each sample photo and "
        "the classifier fitted on them (ridge regression) to tell the photos apart, so outputs "
        "are peaked and follow the image (a random backbone is likely more sensitive to int8 "
        "rounding than a trained one)"
    )
    lines = [
        "## TFLite and SavedModel batch-1 latency",
        "",
        f"{FLAGS.model} at {FLAGS.crop_size}x{FLAGS.crop_size}, {weights}. Batch 1, one process: "
        f"the project's SavedModel (`pixels` signature via `tf.saved_model.load`, TensorFlow "
        f"with {FLAGS.threads} intra-op threads) against the TFLite files in `ai_edge_litert` "
        f"({FLAGS.threads} threads, default XNNPACK delegate), alternating for {FLAGS.rounds} "
        f"rounds of {FLAGS.runs} calls; each latency is the median of its best round. int8 is "
        f"calibrated on {calibration_count} random flipped crops of the sample photos; top-1 "
        f"agreement and max |delta| of the probabilities are against the Keras model on the "
        f"{images} sample photos' centre crops. Ops off XNNPACK: what the delegate leaves to the "
        f"interpreter's kernels. Targets: int8 at most {TARGET_VS_SAVED_MODEL:g}x the SavedModel's "
        "latency (what makes shipping a quantized file worth it over serving the SavedModel "
        f"in-process) and at most {TARGET_VS_FLOAT32:g}x float32 TFLite's (else int8 buys size "
        f"only). Command: `{_command_line()}`",
        "",
        "| artifact | batch-1 ms | vs SavedModel | size MB | top-1 agreement | max abs delta "
        "| ops off XNNPACK |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, ms in best.items():
        check = checks[name]
        ops = off_delegate.get(name)
        ops = "-" if name == "SavedModel" else ("?" if ops is None else ", ".join(ops) or "none")
        lines.append(
            f"| {name} | {ms:.1f} | {ms / peer:.2f}x | {sizes[name] / 1e6:.1f} "
            f"| {check['top1_agreements']}/{check['images']} | {check['max_abs_diff']:.2g} "
            f"| {ops} |"
        )
    lines.append("")
    if "TFLite int8" in best:
        int8 = best["TFLite int8"]
        ratio = int8 / peer
        lines.append(
            target_line(
                "int8 / SavedModel latency",
                f"{ratio:.2f}x",
                f"<= {TARGET_VS_SAVED_MODEL:g}x",
                ratio <= TARGET_VS_SAVED_MODEL,
            )
        )
        if "TFLite float32" in best:
            ratio = int8 / best["TFLite float32"]
            lines.append(
                target_line(
                    "int8 / float32 TFLite latency",
                    f"{ratio:.2f}x",
                    f"<= {TARGET_VS_FLOAT32:g}x",
                    ratio <= TARGET_VS_FLOAT32,
                )
            )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from keras_preact import console

    console.quiet_python_logs()  # TensorFlow's INFO lines while it writes SavedModels
    with stdout_to_stderr():
        section = measure()
    print(section)


if __name__ == "__main__":
    app.run(main)
