"""CPU serving: the exported SavedModel against ONNX Runtime and TFLite, at batch 1 and 16.

Builds a keras-preact model, exports it as the project does and times, in one
process, the contenders alternating for `--rounds` rounds:

* the SavedModel's `pixels` signature (`keras_preact.export.saved_model`),
  loaded with `tf.saved_model.load` and called in-process, as TF Serving runs
  it (TensorFlow with `--threads` intra-op threads);
* the same SavedModel written with each of the export's speed options, off
  by default, measured here to say what each gives: `jit_compile=True` (the
  model in the signature is one XLA cluster), `frozen_weights=True` (the
  weights as graph constants) and, where the CPU has bfloat16 instructions
  (`avx512_bf16` or `amx_bf16`), `precision="bfloat16"`;
* the plain SavedModel served by a process of its own (the control), and by
  one that TensorFlow starts with `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1` (a
  setting of the serving process, not of the export: oneDNN then keeps each
  weight in its own layout between calls, which is safe where nothing trains);
  each times its own calls while this process waits (which runs without the
  setting, whatever its caller's environment);
* ONNX Runtime (`CPUExecutionProvider`, `--threads` intra-op threads, its
  default graph optimisations) on the project's ONNX export
  (`keras_preact.export.onnx_export`), when tf2onnx and onnxruntime import;
* TFLite float32 (`keras_preact.export.tflite`, `ai_edge_litert` with
  `--threads` threads and its default XNNPACK delegate), its input resized to
  each batch.

Every call is one batch of float32 pixels already in memory; each latency is
the median of the contender's best round. The weights are random (seeded) with
every BatchNormalization's statistics measured on the sample photos' eval crops
(one training-mode pass with momentum 0), so each BN normalises what it sees,
as after training; the agreement columns compare each contender's
probabilities with the Keras model's on those crops.

STDOUT is one Markdown section (for BENCHMARKS.md); progress goes to STDERR.
Run from the repository root:

    python benchmarks/serving_latency.py                          # ResNet50V2 at 224, ~2 min
    python benchmarks/serving_latency.py --model=ResNet20V2 --crop_size=32 --batches=1,2 \\
        --runs=2 --batch_runs=1 --rounds=1                        # smoke test, seconds
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

FROZEN_WEIGHTS_SETTING = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"  # read once, when TensorFlow starts
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if not any(arg.startswith("--serve=") for arg in sys.argv[1:]):
    # The contenders of this process run without it whatever the caller's environment (a
    # contender of its own measures it).
    os.environ.pop(FROZEN_WEIGHTS_SETTING, None)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from contract import (  # noqa: E402
    bf16_cpu_flags,
    log,
    measure_bn_statistics,
    stdout_to_stderr,
    target_line,
)

# The export's options, each a SavedModel contender: {--saved_models key: (name, build_archive
# arguments)}.
SAVED_MODEL_OPTIONS = {
    "plain": ("SavedModel `pixels`", {}),
    "jit": ("SavedModel `pixels`, jit_compile=True", {"jit_compile": True}),
    "frozen": ("SavedModel `pixels`, frozen_weights=True", {"frozen_weights": True}),
    "bfloat16": ("SavedModel `pixels`, precision=bfloat16", {"precision": "bfloat16"}),
    "own_process": ("SavedModel `pixels`, a process of its own", {}),
    "onednn_frozen": (f"SavedModel `pixels`, {FROZEN_WEIGHTS_SETTING}=1", {}),
}
# The contenders served by a process of their own, with these environment variables added;
# own_process is the control: such a process without the setting.
SERVING_ENVIRONMENTS = {"own_process": {}, "onednn_frozen": {FROZEN_WEIGHTS_SETTING: "1"}}

flags.DEFINE_string("model", "ResNet50V2", "keras-preact builder name")
flags.DEFINE_integer("crop_size", 224, "input size (the eval crop)")
flags.DEFINE_list("batches", ["1", "16"], "batch sizes; the target is at the first")
flags.DEFINE_integer("threads", 2, "intra-op threads of TensorFlow, ONNX Runtime and TFLite")
flags.DEFINE_integer("runs", 10, "timed calls per contender per round at batch 1")
flags.DEFINE_integer("batch_runs", 2, "timed calls per contender per round at larger batches")
flags.DEFINE_integer("rounds", 5, "alternating rounds")
flags.DEFINE_integer("seed", 0, "seed of the weights and of the inputs")
flags.DEFINE_list(
    "saved_models",
    list(SAVED_MODEL_OPTIONS),
    f"the SavedModels to measure, of {', '.join(SAVED_MODEL_OPTIONS)} (bfloat16: on CPUs with "
    "bfloat16 instructions only)",
)
flags.DEFINE_string(
    "serve",
    None,
    "internal: serve this SavedModel's `pixels` signature to the benchmark's "
    "requests on stdin (the process a contender of SERVING_ENVIRONMENTS runs in)",
)
FLAGS = flags.FLAGS

ONNX = "ONNX Runtime"
TFLITE = "TFLite float32"
TARGET_VS_ONNX = 1.0  # the SavedModel's batch-1 latency / ONNX Runtime's
_FLAG_ORDER = "model crop_size batches threads runs batch_runs rounds seed saved_models".split()


def _write_saved_model(model, directory, options):
    """Writes the project's SavedModel of `model` with `build_archive(**options)` to
    `directory`."""
    from keras_preact.export import saved_model as saved_model_lib

    labels = [f"class_{i}" for i in range(model.outputs[0].shape[-1])]
    archive = saved_model_lib.build_archive(model, labels, FLAGS.crop_size, **options)
    saved_model_lib.write_saved_model(archive, directory, labels)


def _pixels_call(directory):
    """The `pixels` signature of the SavedModel in `directory`, loaded: a call on a batch of
    pixels that returns the probabilities."""
    from keras_preact.export import saved_model as saved_model_lib

    signature = tf.saved_model.load(directory).signatures[saved_model_lib.SIGNATURE_PIXELS]

    def call(images):
        return signature(pixels=tf.constant(images))["probabilities"].numpy()

    return call


class _ServingProcess:
    """The `pixels` signature of a SavedModel served by a process of its own, started with
    the environment variables `env` added: a call on a batch of pixels, passed as .npy files
    in `tmp`, that also times its own calls (`median_ms`) while this process waits."""

    def __init__(self, directory, env, tmp):
        self._tmp, self._requests = tmp, 0
        command = [sys.executable, os.path.abspath(__file__), f"--serve={directory}"]
        command.append(f"--threads={FLAGS.threads}")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )

    def _ask(self, **request):
        """Sends one request (a JSON line); returns the reply's value. Lines that are not
        replies (anything the process printed on stdout) go to stderr."""
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        for line in self._process.stdout:
            if line.startswith(_REPLY):
                return json.loads(line[len(_REPLY) :])
            sys.stderr.write(line)
        code = self._process.wait()
        raise RuntimeError(f"the serving process ended with exit code {code} (its log is above)")

    def _path(self, what):
        self._requests += 1
        return os.path.join(self._tmp, f"serving_{what}_{self._requests}.npy")

    def _input(self, images):
        path = self._path("input")
        np.save(path, images)
        return path

    def __call__(self, images):
        output = self._path("output")
        self._ask(request="call", input=self._input(images), output=output)
        return np.load(output)

    def median_ms(self, images, runs):
        return float(self._ask(request="time", input=self._input(images), runs=runs))

    def close(self):
        self._process.stdin.close()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


_REPLY = "serving reply: "  # what starts each reply line of the serving process


def _serve(directory):
    """The serving process of `_ServingProcess`: answers each request, a JSON line on stdin:
    `call` (the probabilities of the pixels in the `input` .npy file, written to `output`)
    or `time` (the median ms of `runs` calls on them), with one reply line on stdout."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything TensorFlow prints goes to stderr, not into the replies
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    call = _pixels_call(directory)
    for line in sys.stdin:
        request = json.loads(line)
        images = np.load(request["input"])
        os.remove(request["input"])
        if request["request"] == "call":
            np.save(request["output"], call(images))
            value = "done"
        else:
            value = _median_ms(call, images, request["runs"])
        print(_REPLY + json.dumps(value), file=replies, flush=True)


def _onnx_runtime(model, path):
    """ONNX Runtime on the project's ONNX export of `model`: a call, and its version."""
    import onnxruntime

    from keras_preact.export import onnx_export

    onnx_export.export_onnx(model, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = FLAGS.threads
    session = onnxruntime.InferenceSession(
        path, sess_options=options, providers=["CPUExecutionProvider"]
    )

    def call(images):
        return session.run([onnx_export.OUTPUT_NAME], {onnx_export.INPUT_NAME: images})[0]

    return call, onnxruntime.__version__


def _tflite(model, batches):
    """TFLite float32 of `model`, one interpreter per batch size: a call on a batch."""
    from keras_preact.export import tflite as tflite_lib

    data = tflite_lib.convert_all(model, ["float32"], FLAGS.crop_size)["float32"]
    runners = {}
    for batch in batches:
        runner = tflite_lib.TFLiteRunner(data, num_threads=FLAGS.threads)
        shape = [batch, FLAGS.crop_size, FLAGS.crop_size, 3]
        runner.interpreter.resize_tensor_input(runner.input["index"], shape)
        runner.interpreter.allocate_tensors()
        runners[batch] = runner

    def call(images):
        interpreter, runner = runners[len(images)].interpreter, runners[len(images)]
        interpreter.set_tensor(runner.input["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(runner.output["index"])

    return call


def _median_ms(call, images, runs):
    """The median ms of `runs` calls on `images`, after one warm-up (a contender served by a
    process of its own times them there)."""
    if isinstance(call, _ServingProcess):
        return call.median_ms(images, runs)
    call(images)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(images)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _batch_of(crops, batch):
    """`batch` crops, cycling through `crops`."""
    return np.ascontiguousarray(crops[np.arange(batch) % len(crops)])


def _contenders(model, batches, tmp, stack):
    """`({name: call}, {name: runtime in words})`, in measurement order; the serving
    processes end with `stack` (a `contextlib.ExitStack`)."""
    from keras_preact.export import onnx_export

    contenders, runtimes = {}, {}
    log("writing and loading the SavedModels")
    for key in FLAGS.saved_models:
        name, options = SAVED_MODEL_OPTIONS[key]
        if key == "bfloat16" and not bf16_cpu_flags():
            log("no bfloat16 instructions (avx512_bf16, amx_bf16): no bfloat16 SavedModel")
            continue
        directory = os.path.join(tmp, f"saved_model_{key}")
        _write_saved_model(model, directory, options)
        runtimes[name] = f"TensorFlow {tf.__version__}"
        if key in SERVING_ENVIRONMENTS:
            contenders[name] = _ServingProcess(directory, SERVING_ENVIRONMENTS[key], tmp)
            stack.callback(contenders[name].close)
            runtimes[name] += ", own process"
        else:
            contenders[name] = _pixels_call(directory)
    if onnx_export.available():
        log("exporting ONNX")
        contenders[ONNX], version = _onnx_runtime(model, os.path.join(tmp, "model.onnx"))
        runtimes[ONNX] = f"onnxruntime {version}"
    else:
        log("tf2onnx or onnxruntime does not import: no ONNX Runtime figures")
    log("converting TFLite float32")
    contenders[TFLITE] = _tflite(model, batches)
    runtimes[TFLITE] = "ai_edge_litert, XNNPACK"
    return contenders, runtimes


def measure():
    """Runs the benchmark; returns the Markdown section."""
    import keras

    import keras_preact
    from keras_preact.export import verify as verify_lib

    batches = [int(b) for b in FLAGS.batches]
    try:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    except RuntimeError:  # TensorFlow already started: it keeps its default (all cores)
        log("TensorFlow already initialised: its intra-op threads are left at the default")
    keras.utils.set_random_seed(FLAGS.seed)
    crops = verify_lib.eval_crops(verify_lib.sample_images(), FLAGS.crop_size)
    log(f"{FLAGS.model} at {FLAGS.crop_size}: building, BN statistics from the sample photos")
    model = getattr(keras_preact, FLAGS.model)(input_shape=(None, None, 3))
    measure_bn_statistics(model, crops)
    reference = verify_lib.keras_probabilities(model, crops)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        contenders, runtimes = _contenders(model, batches, tmp, stack)
        checks = {
            name: verify_lib.compare(reference, np.concatenate([call(c[None]) for c in crops]))
            for name, call in contenders.items()
        }
        best = {}
        for round_index in range(FLAGS.rounds):
            for name, call in contenders.items():
                for batch in batches:
                    runs = FLAGS.runs if batch == 1 else FLAGS.batch_runs
                    ms = _median_ms(call, _batch_of(crops, batch), runs)
                    best[name, batch] = min(best.get((name, batch), float("inf")), ms)
            summary = ", ".join(f"{n} b{b} {ms:.1f}" for (n, b), ms in best.items())
            log(f"round {round_index + 1}/{FLAGS.rounds}, best medians so far (ms): {summary}")
    return _report(best, checks, runtimes, batches)


def _bf16_words():
    flags_found = bf16_cpu_flags()
    if flags_found:
        return f"this CPU has {' and '.join(flags_found)}"
    return "left out: this CPU has no bfloat16 instructions"


def _command_line():
    parts = ["python benchmarks/serving_latency.py"]
    for name in _FLAG_ORDER:
        value = FLAGS[name].value
        value = ",".join(value) if isinstance(value, list) else value
        parts.append(f"--{name}={value}")
    return " ".join(parts)


def _report(best, checks, runtimes, batches):
    first = batches[0]
    peer = best.get((ONNX, first))
    heads = " | ".join(f"batch-{b} ms | batch-{b} img/s" for b in batches)
    lines = [
        "## CPU serving: SavedModel vs ONNX Runtime and TFLite",
        "",
        f"{FLAGS.model} at {FLAGS.crop_size}x{FLAGS.crop_size}, random weights (seeded) with "
        "BN statistics measured on the sample photos' eval crops. Float32 pixels in memory, "
        "each call one batch, the contenders in one process but two: the project's SavedModel "
        "through its `pixels` "
        "signature (`tf.saved_model.load`, in-process, as TF Serving runs it; TensorFlow with "
        f"{FLAGS.threads} intra-op threads), the same written with each of `build_archive`'s "
        "speed options, off by default (`jit_compile=True`: the model one XLA cluster; "
        '`frozen_weights=True`: the weights as graph constants; `precision="bfloat16"`, '
        f"frozen too, {_bf16_words()}), the plain one again in a process of its own (the "
        "control) and in one started with `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1` (a setting of "
        "the serving process: oneDNN keeps each weight in its own layout between calls; each "
        "of those processes times its own calls while the benchmark's waits), ONNX Runtime "
        f"(`CPUExecutionProvider`, {FLAGS.threads} intra-op threads, default graph "
        "optimisations) on the project's ONNX export, and TFLite float32 (`ai_edge_litert`, "
        f"{FLAGS.threads} threads, XNNPACK). The contenders alternate for {FLAGS.rounds} rounds "
        f"of {FLAGS.runs} calls at batch 1 and {FLAGS.batch_runs} at larger batches; each "
        "latency is the median of its best round. Agreement: top-1 and max |delta| of the "
        "probabilities against the Keras model on the sample photos' centre crops. Target: "
        f"the SavedModel at most {TARGET_VS_ONNX:g}x ONNX Runtime's batch-{first} latency (a "
        "user serving on CPU should lose nothing by taking the SavedModel). "
        f"Command: `{_command_line()}`",
        "",
        f"| artifact | runtime | {heads} | vs ONNX Runtime, batch {first} "
        "| top-1 agreement | max abs delta |",
        "|---|---|" + "---:|---:|" * len(batches) + "---:|---:|---:|",
    ]
    for name, runtime in runtimes.items():
        cells = [name, runtime]
        for batch in batches:
            ms = best[name, batch]
            cells += [f"{ms:.1f}", f"{1000.0 * batch / ms:.1f}"]
        cells.append(f"{best[name, first] / peer:.2f}x" if peer else "-")
        check = checks[name]
        cells += [f"{check['top1_agreements']}/{check['images']}", f"{check['max_abs_diff']:.2g}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if peer is None:
        lines.append("No ONNX Runtime (tf2onnx or onnxruntime does not import): no target.")
        return "\n".join(lines)
    for name in (name for name, _ in SAVED_MODEL_OPTIONS.values() if name in runtimes):
        ratio = best[name, first] / peer
        lines.append(
            target_line(
                f"{name} / ONNX Runtime, batch-{first} latency",
                f"{ratio:.2f}x",
                f"<= {TARGET_VS_ONNX:g}x",
                ratio <= TARGET_VS_ONNX,
            )
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.serve:
        return _serve(FLAGS.serve)
    if not all(b.isdigit() and int(b) > 0 for b in FLAGS.batches):
        raise app.UsageError(f"--batches={','.join(FLAGS.batches)}: give positive integers")
    unknown = [key for key in FLAGS.saved_models if key not in SAVED_MODEL_OPTIONS]
    if unknown:
        raise app.UsageError(
            f"--saved_models: unknown {', '.join(unknown)} (known: {', '.join(SAVED_MODEL_OPTIONS)})"
        )
    from keras_preact import console

    console.quiet_python_logs()  # TensorFlow's INFO lines while it writes SavedModels
    with stdout_to_stderr():
        section = measure()
    print(section)


if __name__ == "__main__":
    app.run(main)
