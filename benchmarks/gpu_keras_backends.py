"""ResNet-50 v2 training and inference images/s on Keras' JAX or PyTorch backend, against peers.

In one process, on one device, with the same batch, it measures

* keras-preact: `keras_preact.ResNet50V2(weights=None)` (its default layout),
* keras.applications: `keras.applications.ResNet50V2(weights=None)` on the same
  Keras backend (whichever `KERAS_BACKEND` names: `jax` or `torch`), and
* timm (the PyTorch peer, where torch and timm import): `resnetv2_50` in plain
  PyTorch, bf16 autocast, `channels_last`, `torch.compile` on the model,
  `cudnn.benchmark` on (as timm's train.py).

The Keras models (1000 classes, logits, no preprocessing layer, which
keras.applications keeps outside the model; keras-preact's default layout and
timm do 4.089 G multiply-adds per 224x224 image, keras.applications 3.482 G, so
the ratios to it are also given per multiply-add at 224) run under the
`mixed_bfloat16` policy (`--precision=bf16`)
and are compiled with `model.compile(jit_compile=True)`: XLA under JAX, and
`torch.compile` of Keras' train and predict steps under PyTorch
(keras/src/backend/torch/trainer.py). Training: SGD with momentum 0.9, sparse
categorical crossentropy from logits.

What is timed is the model, not an input path: one synthetic batch is put on the
device once, and the compiled step that `Model.fit` runs per batch
(`model.train_function`; `model.predict_function` for inference) is called in a
loop on it, with no host-to-device copies, callbacks or per-step
synchronisation; the clock stops after the device has finished. timm's step is
the usual PyTorch loop (autocast forward and loss, backward, `SGD.step`);
its inference a compiled forward under `torch.inference_mode()`. Warm-up steps
(compilation included) are not timed; then `--rounds` rounds of `--steps` steps,
the models interleaved in each round, and the median round counts.

It needs no TensorFlow: keras, jax (or torch), numpy and this package's sources
(+ torch and timm for the peer). Prints one Markdown section (the contract in
benchmarks/README.md) to stdout, progress to stderr. From the repository root:

    KERAS_BACKEND=jax python benchmarks/gpu_keras_backends.py     # full settings, on a GPU
    KERAS_BACKEND=torch python benchmarks/gpu_keras_backends.py --json=/tmp/torch.json
    KERAS_BACKEND=jax python benchmarks/gpu_keras_backends.py --smoke   # a CPU: ~30 s

(On a 2-core CPU, `--smoke` under `KERAS_BACKEND=torch` takes minutes: torch.compile of
three ResNet-50s; `--smoke --no-compile` takes seconds.) Without a GPU only `--smoke`
runs. A model that fails is left out with its reason, and `--json` is rewritten after
each phase. benchmarks/README.md, "On a borrowed GPU without TensorFlow", says how to
bring Keras to a GPU machine that lacks it, in one prepared call.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time

# JAX would take 75% of the GPU's memory up front, leaving too little for the timm peer
# (PyTorch) in the same process; without preallocation it grows its pool as needed.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from contract import target_line  # noqa: E402

import keras_preact  # noqa: E402

MODELS = ("preact", "keras", "timm")
LABELS = {"preact": "keras-preact", "keras": "keras.applications", "timm": "timm"}
DEFAULTS = {"batch_size": 256, "steps": 40, "warmup": 5, "rounds": 5, "image_size": 224}
SMOKE = {"batch_size": 2, "steps": 2, "warmup": 1, "rounds": 1, "image_size": 32}
# keras-preact's images/s over each peer's, and training images/s on one H100.
TARGET_VS_KERAS = 1.0
TARGET_VS_TIMM = 0.9
TARGET_H100 = 2600
LEARNING_RATE = 0.01  # its value does not change the speed
# Multiply-adds of one 224x224 image (`python -m keras_preact.analysis cost --models=ResNet50V2
# --sizes=224`): keras-preact's default (paper) layout and its timm layout, which is timm's
# resnetv2_50, do the same work; keras.applications strides each stage's last unit instead of
# the next stage's first, and does 15% less.
MULTIPLY_ADDS_224 = {"preact": 4.089e9, "keras": 3.482e9, "timm": 4.089e9}


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- settings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in DEFAULTS.items():
        parser.add_argument(
            f"--{name}",
            type=int,
            default=None,
            help=f"default {default} ({SMOKE[name]} with --smoke)",
        )
    parser.add_argument("--precision", choices=("bf16", "float32"), default="bf16")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma list of preact,keras,timm (default: all)"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="jit_compile=True / torch.compile (default); --no-compile: eager",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny settings (image 32, batch 2, 2 steps): checks the code path on a CPU",
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, SMOKE[name] if args.smoke else default)
    small = [name for name in DEFAULTS if getattr(args, name) < 1]
    if small:
        parser.error(f"--{small[0]}={getattr(args, small[0])}: give a positive integer")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {','.join(MODELS)}")
    return args


def command(args):
    flags = [f"--{name}={getattr(args, name)}" for name in DEFAULTS]
    flags += [f"--precision={args.precision}", f"--models={','.join(args.models)}"]
    if not args.compile:
        flags.append("--no-compile")
    script = "python benchmarks/gpu_keras_backends.py"
    return " ".join([f"KERAS_BACKEND={backend()}", script, *flags])


# ---------------------------------------------------------------- the device


def backend():
    return keras.backend.backend()


def device():
    """(name, on_gpu) of the device the Keras backend computes on."""
    if backend() == "jax":
        import jax

        first = jax.devices()[0]
        return first.device_kind, first.platform != "cpu"
    if backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(), True
        return "cpu", False
    raise SystemExit(f"KERAS_BACKEND={backend()}: this benchmark runs on jax or torch")


def synchronize():
    """Waits for the device (PyTorch's queue; JAX's arrays are waited on where they are made)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def versions():
    found = {"python": platform.python_version(), "keras": keras.__version__}
    found["keras-preact"] = getattr(keras_preact, "__version__", "?")
    for name in ("jax", "jaxlib", "torch", "timm"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", "?")
    found["numpy"] = np.__version__
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        found["CUDA (torch)"] = torch.version.cuda
        found["cuDNN (torch)"] = torch.backends.cudnn.version()
    return found


# ---------------------------------------------------------------- Keras models


def build_keras(name, args):
    size = (args.image_size, args.image_size, 3)
    if name == "preact":
        return keras_preact.ResNet50V2(
            weights=None, input_shape=size, classifier_activation=None, include_preprocessing=False
        )
    return keras.applications.ResNet50V2(weights=None, input_shape=size, classifier_activation=None)


class KerasRunner:
    """A compiled Keras model; `train(n)` / `infer(n)` run n steps and return their seconds."""

    def __init__(self, name, args, images, labels):
        self.name = name
        self.model = build_keras(name, args)
        self.model.compile(
            optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=args.compile,
        )
        self.x = keras.ops.convert_to_tensor(images)
        self.y = keras.ops.convert_to_tensor(labels)
        compiled = {"jax": "XLA", "torch": "`torch.compile`"}[backend()]
        compiled = f"{compiled} (`jit_compile=True`)" if args.compile else "eager"
        policy = "`mixed_bfloat16`" if args.precision == "bf16" else "float32"
        self.runs_as = f"Keras on {backend()}, {policy}, {compiled}"
        if name == "preact":
            self.label = f"keras-preact `ResNet50V2` (default layout, `{self.model.layout.name}`)"
        else:
            self.label = "keras.applications `ResNet50V2`"

    def warm_up_training(self, steps):
        self.model.train_on_batch(self.x, self.y)  # builds the optimizer, compiles the step
        self.train(steps)

    def warm_up_inference(self, steps):
        self.model.predict_on_batch(self.x)
        self.infer(steps)

    def train(self, steps):
        return self._timed(self.model.train_function, (self.x, self.y, None), steps, True)

    def infer(self, steps):
        return self._timed(self.model.predict_function, (self.x,), steps, False)

    def _timed(self, function, data, steps, training):
        """Seconds of `steps` calls of the compiled step `function` on `data`."""
        if backend() == "torch":
            return _timed_loop(lambda: function([data]), steps)
        variables = self._jax_variables(training=training)
        state = tuple([v.value for v in group] for group in variables)
        seconds, state = _timed_jax_loop(function, state, data, steps)
        _assign(variables, state)
        return seconds

    def _jax_variables(self, training):
        """The variable groups of the JAX trainer's state, in its order."""
        model = self.model
        groups = [model.trainable_variables, model.non_trainable_variables]
        if training:
            groups += [model.optimizer.variables, model.metrics_variables]
        return groups


def _timed_loop(step, steps):
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return time.perf_counter() - start


def _timed_jax_loop(function, state, data, steps):
    """Threads the (donated) state through `steps` calls; (seconds, the final state)."""
    import jax

    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        outputs, state = function(state, iter([data]))
    jax.block_until_ready((outputs, state))
    return time.perf_counter() - start, state


def _assign(variables, state):
    """Puts the final state back into the model (its old buffers were donated to the steps)."""
    for group, values in zip(variables, state):
        for variable, value in zip(group, values):
            variable.assign(value)


# ---------------------------------------------------------------- timm (plain PyTorch)


def import_timm():
    """(torch, timm), or the reason they do not import."""
    try:
        return importlib.import_module("torch"), importlib.import_module("timm")
    except Exception as error:  # ImportError, or a broken install (torchvision, CUDA)
        return None, f"{type(error).__name__}: {error}"


class TimmRunner:
    """timm's resnetv2_50: bf16 autocast, channels_last, torch.compile, cuDNN's autotuning
    (`torch.backends.cudnn.benchmark`, as timm's train.py sets it)."""

    name = "timm"

    def __init__(self, torch, timm, args, images, labels):
        self.torch = torch
        torch.backends.cudnn.benchmark = True  # timm's train.py sets it: cuDNN autotunes
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = timm.create_model("resnetv2_50", pretrained=False, num_classes=1000)
        model = model.to(self.device, memory_format=torch.channels_last)
        self.model = model
        self.forward = torch.compile(model) if args.compile else model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)
        self.bf16 = args.precision == "bf16"
        nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        self.x = torch.from_numpy(nchw).to(self.device, memory_format=torch.channels_last)
        self.y = torch.from_numpy(labels.astype("int64")).to(self.device)
        autocast = "bf16 autocast" if self.bf16 else "float32"
        compiled = "`torch.compile`" if args.compile else "eager"
        self.runs_as = (
            f"PyTorch {torch.__version__}, {autocast}, channels_last, {compiled}, `cudnn.benchmark`"
        )
        self.label = "timm `resnetv2_50`"

    def _autocast(self):
        return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16, enabled=self.bf16)

    def _train_step(self):
        with self._autocast():
            loss = self.torch.nn.functional.cross_entropy(self.forward(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _infer_step(self):
        with self.torch.inference_mode(), self._autocast():
            self.forward(self.x)

    def warm_up_training(self, steps):
        self.model.train()
        self.train(steps + 1)

    def warm_up_inference(self, steps):
        self.model.eval()
        self.infer(steps + 1)

    def train(self, steps):
        return _timed_loop(self._train_step, steps)

    def infer(self, steps):
        return _timed_loop(self._infer_step, steps)


# ---------------------------------------------------------------- measuring


def synthetic_batch(args):
    rng = np.random.default_rng(0)
    size = args.image_size
    images = rng.uniform(-1, 1, (args.batch_size, size, size, 3)).astype("float32")
    labels = rng.integers(0, 1000, args.batch_size).astype("int32")
    return images, labels


def _raise_dynamo_limits():
    """Under PyTorch, room for every graph of both Keras models: Keras' layers share Python
    functions (`Operation.__call__`, the train step), and at dynamo's default limit of 8
    compiled versions per function the model built second, and the inference phase, would
    fall back to eager where the first model did not: the comparison would favour whichever
    model came first."""
    import torch

    for name in ("recompile_limit", "cache_size_limit"):  # the newer name, the older
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 256)
    for name in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 4096)


def build_runners(args, skipped):
    images, labels = synthetic_batch(args)
    if backend() == "torch" and args.compile:
        _raise_dynamo_limits()
    runners = []
    keras.utils.set_random_seed(0)
    policy = keras.mixed_precision.global_policy()
    if args.precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for name in ("preact", "keras"):
            if name in args.models:
                log(f"building {LABELS[name]} ResNet50V2")
                runners.append(KerasRunner(name, args, images, labels))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    if "timm" in args.models:
        torch, timm = import_timm()
        if torch is None:
            skipped["timm"] = f"not importable ({timm})"
        else:
            log("building timm resnetv2_50")
            torch.manual_seed(0)
            runners.append(TimmRunner(torch, timm, args, images, labels))
    return runners


def measure(runners, args, phase, skipped):
    """{name: [images/s of each round]} of one phase (train or infer), the models interleaved.

    A model whose warm-up or step raises (out of memory, a compile error) is left out of
    this phase and the next, with the reason in `skipped`; the others go on."""
    warm_up = "warm_up_training" if phase == "train" else "warm_up_inference"
    for runner in list(runners):
        start = time.perf_counter()
        if _attempt(runner, warm_up, args.warmup, runners, skipped, phase) is not None:
            log(f"{phase}: {LABELS[runner.name]} warmed up in {time.perf_counter() - start:.1f} s")
    rates = {runner.name: [] for runner in runners}
    for r in range(args.rounds):
        for runner in list(runners):
            seconds = _attempt(runner, phase, args.steps, runners, skipped, phase)
            if seconds is None:
                del rates[runner.name]
                continue
            rates[runner.name].append(args.steps * args.batch_size / seconds)
            log(
                f"{phase} round {r + 1}/{args.rounds}: {LABELS[runner.name]} "
                f"{rates[runner.name][-1]:.1f} images/s"
            )
    return rates


def _attempt(runner, method, steps, runners, skipped, phase):
    """`runner.<method>(steps)`'s result (True for a warm-up); None if it raised, and then
    `runner` is dropped from `runners`, with the reason in `skipped`."""
    try:
        result = getattr(runner, method)(steps)
    except Exception as error:  # any failure of one model spares the others
        first_line = (str(error).splitlines() or [""])[0][:200]
        skipped[runner.name] = f"{phase} failed: {type(error).__name__}: {first_line}"
        log(f"{LABELS[runner.name]}: {skipped[runner.name]}")
        runners.remove(runner)
        return None
    return True if result is None else result


def results(rates_by_phase):
    """{name: {"train": [...], "infer": [...], "train_median": x, "infer_median": y}}"""
    out = {}
    for phase, rates in rates_by_phase.items():
        for name, values in rates.items():
            entry = out.setdefault(name, {})
            entry[phase] = values
            entry[f"{phase}_median"] = statistics.median(values)
    return out


def ratios(figures):
    """{"keras": {"train": x, "infer": y}, "timm": {...}}: keras-preact's images/s over each
    peer's, in the phases both were measured in."""
    if "preact" not in figures:
        return {}
    ours = figures["preact"]
    found = {}
    for peer in ("keras", "timm"):
        both = [p for p in ("train", "infer") if f"{p}_median" in ours]
        both = [p for p in both if f"{p}_median" in figures.get(peer, {})]
        if both:
            found[peer] = {p: ours[f"{p}_median"] / figures[peer][f"{p}_median"] for p in both}
    return found


def work_ratio(peer, args):
    """keras-preact's multiply-adds per image over `peer`'s, at 224 (None at other sizes)."""
    if args.image_size != 224:
        return None
    return MULTIPLY_ADDS_224["preact"] / MULTIPLY_ADDS_224[peer]


def target_lines(figures, by_peer, device_name, args):
    lines = []
    for peer, target in (("keras", TARGET_VS_KERAS), ("timm", TARGET_VS_TIMM)):
        for phase, what in (("train", "training"), ("infer", "inference")):
            value = by_peer.get(peer, {}).get(phase)
            if value is None:
                continue
            lines.append(
                target_line(
                    f"keras-preact / {LABELS[peer]}, {what} images/s",
                    f"{value:.2f}x",
                    f">= {target:.1f}x",
                    value >= target,
                )
            )
            work = work_ratio(peer, args)
            if peer == "keras" and work is not None:  # the same work rate (CPU: model_throughput)
                lines.append(
                    target_line(
                        f"keras-preact / {LABELS[peer]}, {what} multiply-adds per second",
                        f"{value * work:.2f}x",
                        f">= {target:.1f}x",
                        value * work >= target,
                    )
                )
    if "H100" in device_name and "train_median" in figures.get("preact", {}):
        rate = figures["preact"]["train_median"]
        lines.append(
            target_line(
                "keras-preact training images/s on one H100",
                f"{rate:,.0f}",
                f">= {TARGET_H100:,}",
                rate >= TARGET_H100,
            )
        )
    return lines


# ---------------------------------------------------------------- the section


def section(args, figures, by_peer, skipped, device_name, on_gpu):
    measured = ", ".join(LABELS[name] for name in MODELS if name in figures)
    lines = [f"## ResNet-50 v2 on Keras' {backend()} backend: {measured}", ""]
    if not on_gpu:
        lines += [
            f"**No GPU ({device_name}): a smoke run; these figures are not GPU figures and the "
            "targets below apply to GPUs.**",
            "",
        ]
    lines += [
        _describe(args, skipped, device_name),
        "",
        "| Model | Runs as | Training images/s | Inference images/s | Training rounds | "
        "Inference rounds |",
        "|---|---|---:|---:|---|---|",
    ]
    for name in MODELS:
        if name in figures:
            f = figures[name]
            cells = [f"{f[p + '_median']:.1f}" if p in f else "-" for p in ("train", "infer")]
            cells += [", ".join(f"{v:.1f}" for v in f.get(p, [])) for p in ("train", "infer")]
            lines.append(f"| {f['label']} | {f['runs_as']} | " + " | ".join(cells) + " |")
    for peer, r in by_peer.items():
        cells = [f"{r[p]:.2f}x" if p in r else "-" for p in ("train", "infer")]
        lines.append(f"| keras-preact / {LABELS[peer]} | | {cells[0]} | {cells[1]} | | |")
        work = work_ratio(peer, args)
        if work is not None and work != 1.0:
            cells = [f"{r[p] * work:.2f}x" if p in r else "-" for p in ("train", "infer")]
            lines.append(
                f"| ... per multiply-add ({work:.3f}x the work) | | {cells[0]} | {cells[1]} | | |"
            )
    targets = target_lines(figures, by_peer, device_name, args)
    if targets:
        lines += ["", *targets]
    return "\n".join(lines), targets


def _describe(args, skipped, device_name):
    names = ", ".join(f"{k} {v}" for k, v in versions().items())
    peers = "; ".join(f"{LABELS[k]}: {v}" for k, v in skipped.items())
    return (
        f"Training and inference images/s of ResNet-50 v2 (1000 classes, logits, "
        f"{args.image_size}x{args.image_size}, batch {args.batch_size}) on one device, "
        f"**{device_name}**, Keras backend `{backend()}`, {names}. "
        "The Keras models' compiled step (`model.train_function`, SGD momentum 0.9, sparse "
        "categorical crossentropy; `model.predict_function`) runs in a loop on one synthetic "
        "batch already on the device, timm's the usual PyTorch loop (autocast, backward, "
        "`SGD.step`; a compiled forward under `inference_mode`): the model is measured, not an "
        "input path. keras-preact is built without its preprocessing layer (keras.applications "
        "normalises outside the model). Its default layout and timm's `resnetv2_50` do "
        f"{MULTIPLY_ADDS_224['preact'] / 1e9:.3f} G multiply-adds per 224x224 image, "
        f"keras.applications {MULTIPLY_ADDS_224['keras'] / 1e9:.3f} G (its strides sit in each "
        "stage's last unit), so at 224 the ratios to it are also given per multiply-add. "
        f"{args.warmup} warm-up step(s) (compilation) untimed, then "
        f"{args.rounds} round(s) of {args.steps} steps, the models interleaved; the median "
        "round counts. "
        + (f"Not measured: {peers}. " if peers else "")
        + f"Targets: keras-preact at least as fast as keras.applications "
        f"(>= {TARGET_VS_KERAS:.1f}x), within a tenth of timm (>= {TARGET_VS_TIMM:.1f}x; "
        "under JAX that compares XLA with PyTorch), and "
        f">= {TARGET_H100:,} training images/s on one H100 (bf16, batch 256; "
        "checked only on an H100). "
        f"Command: `{command(args)}`."
    )


def main(argv=None):
    """Runs the benchmark, prints its section; returns the figures (what --json writes, after
    each phase, so that a run cut short keeps what it measured)."""
    args = parse_args(argv)
    device_name, on_gpu = device()
    log(f"{backend()} on {device_name}: {command(args)}")
    if not on_gpu and not args.smoke:
        raise SystemExit(
            f"No GPU: {backend()} computes on {device_name}. The full settings take hours on a "
            "CPU: check the GPU's install (under JAX, JAX_PLATFORMS=cuda makes a missing CUDA "
            "plugin an error instead of a fall-back), or pass --smoke."
        )
    skipped = {}
    runners = build_runners(args, skipped)
    built = list(runners)  # measure() drops a model that fails; its figures so far stay
    rates = {}
    for phase in ("train", "infer"):
        if not runners:
            raise SystemExit(
                f"no model left to measure ({'; '.join(skipped.values()) or '--models'})"
            )
        rates[phase] = measure(runners, args, phase, skipped)
        report, text = _report(args, rates, built, skipped, device_name, on_gpu)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
    print(text, flush=True)
    return report


def _report(args, rates, built, skipped, device_name, on_gpu):
    """(the --json figures, the section) from the phases measured so far."""
    figures = results(rates)
    labels = {runner.name: runner for runner in built}
    for name, entry in figures.items():
        entry.update(label=labels[name].label, runs_as=labels[name].runs_as)
    by_peer = ratios(figures)
    text, targets = section(args, figures, by_peer, skipped, device_name, on_gpu)
    report = {
        "backend": backend(),
        "device": device_name,
        "on_gpu": on_gpu,
        "versions": versions(),
        "command": command(args),
        "settings": {k: getattr(args, k) for k in (*DEFAULTS, "precision", "models", "compile")},
        "images_per_second": figures,
        "ratios": by_peer,
        "not_measured": skipped,
        "targets": targets,
    }
    return report, text


if __name__ == "__main__":
    main()
