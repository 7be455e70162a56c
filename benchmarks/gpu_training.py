"""Does the JPEG input pipeline keep the GPUs fed when ResNet-50 v2 trains at full speed?

Trains `keras_preact.ResNet50V2` (logits, 1000 classes) the way the recipes
run a GPU job: `training.make_strategy("mirrored")` over every local GPU,
`mixed_float16` with a `LossScaleOptimizer` around `training.CoupledSGD`, XLA
on the forward and backward pass (`jit_compile=True`) and `steps_per_loop`
steps per `tf.function` call, all through `keras_preact.training.Trainer`. It
measures training images/s fed by

* (a) synthetic in-memory batches (one batch of the pipeline's shapes, repeated), and
* (b) the recipes' JPEG folder pipeline, `keras_preact.data.make_dataset("folder",
  "train", ...)`, over a folder of photos at ImageNet-like sizes written by
  `write_photos` of benchmarks/input_pipeline.py,

one Trainer alternating between the two for `--rounds` rounds, and prints
(b) / (a): 1.0 means the pipeline keeps up. NVIDIA's published TensorFlow
ResNet-50 v1.5 figures are printed beside ours as context, not as a target.

Without a GPU it still runs, on the CPU, with tiny settings (the flags not
given on the command line default to `CPU_DEFAULTS`), and says so: those
figures are not GPU figures; the run checks that the GPU code path works.

Prints one Markdown section (the benchmarks' contract, see benchmarks/README.md)
to stdout; progress goes to stderr. From the repository root:

    python benchmarks/gpu_training.py                  # full settings on the GPU machine
    make bench-gpu                                      # the same, with the gpu extra installed
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from contract import target_line  # noqa: E402

# Imported before this script's flags: input_pipeline defines flags of the same
# names, which ours replace (allow_override below).
from input_pipeline import write_photos  # noqa: E402

from keras_preact import console, training  # noqa: E402
from keras_preact.data import make_dataset  # noqa: E402
from keras_preact.models.imagenet import ImageNetResNetV2  # noqa: E402


def _define(kind, name, default, help_text):
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text, allow_override=True)


_define("integer", "depth", 50, "ImageNet ResNet-v2 depth (50: keras_preact.ResNet50V2)")
_define("integer", "image_size", 224, "training crop size")
_define("integer", "batch_size", 256, "images per step per GPU (global: times the GPUs)")
_define("integer", "steps", 100, "steps per timed epoch (each after a warm-up epoch)")
_define("integer", "rounds", 3, "alternating rounds of (a) and (b); the best epoch counts")
_define("integer", "steps_per_loop", 10, "steps per tf.function call (Trainer)")
_define("integer", "num_files", 256, "distinct JPEG files in the folder")
_define("boolean", "mixed_precision", True, "mixed_float16 with a LossScaleOptimizer")
_define("boolean", "jit_compile", True, "XLA on the forward and backward pass")
FLAGS = flags.FLAGS
FLAG_NAMES = (
    "depth",
    "image_size",
    "batch_size",
    "steps",
    "rounds",
    "steps_per_loop",
    "num_files",
    "mixed_precision",
    "jit_compile",
)

# Without a GPU: what the flags not given on the command line become (a smoke run).
CPU_DEFAULTS = {
    "depth": 18,
    "image_size": 64,
    "batch_size": 8,
    "steps": 2,
    "rounds": 1,
    "steps_per_loop": 1,
    "num_files": 16,
}
NO_GPU = "no GPU: CPU run, figures are not GPU figures"
# The (b) / (a) ratio below which the pipeline is said not to keep up.
TARGET = 0.90
# NVIDIA DeepLearningExamples, TensorFlow ResNet-50 v1.5 training throughput (context only).
ANCHORS = [
    ("NVIDIA TF ResNet-50 v1.5, one A100, AMP + XLA", 2375),
    ("NVIDIA TF ResNet-50 v1.5, one V100", 1270),
]


def log(message):
    print(message, file=sys.stderr, flush=True)


def settings(gpus):
    """{flag name: value}, with `CPU_DEFAULTS` for the flags not given when there is no GPU."""
    values = {name: FLAGS[name].value for name in FLAG_NAMES}
    if not gpus:
        for name, value in CPU_DEFAULTS.items():
            if not FLAGS[name].present:
                values[name] = value
    return values


def gpu_names(gpus):
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return names


def make_trainer(strategy, s, global_batch):
    def build_model():
        keras.utils.set_random_seed(0)
        size = s["image_size"]
        return ImageNetResNetV2(s["depth"], input_shape=(size, size, 3), classifier_activation=None)

    def build_optimizer():
        # The paper's ImageNet rate (0.1 per 256 images); its value does not change the speed.
        optimizer = training.CoupledSGD(0.1 * global_batch / 256)
        if s["mixed_precision"]:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    return training.Trainer(
        strategy,
        build_model,
        build_optimizer,
        global_batch_size=global_batch,
        steps_per_loop=s["steps_per_loop"],
        jit_compile=s["jit_compile"],
        verbose=0,
    )


def data_fns(root, s, global_batch):
    """`{"synthetic": fn, "folder": fn}`: the two `train_dataset_fn(input_context)` of the Trainer."""

    def folder(ctx):
        return make_dataset(
            "folder",
            "train",
            data_dir=root,
            batch_size=global_batch,
            image_size=s["image_size"],
            seed=0,
            input_context=ctx,
            repeat=True,
        )

    # One batch of the pipeline's exact shapes and dtypes, so the step is not retraced.
    images_spec, labels_spec = folder(None).element_spec

    def synthetic(ctx):
        per_replica = ctx.get_per_replica_batch_size(global_batch)
        size = s["image_size"]
        images = tf.random.stateless_uniform([per_replica, size, size, 3], [0, 0], 0, 255)
        labels = tf.random.stateless_uniform(
            [per_replica], [0, 1], 0, 1000, dtype=labels_spec.dtype
        )
        batch = (tf.cast(images, images_spec.dtype), labels)
        return tf.data.Dataset.from_tensors(batch).repeat()

    return {"synthetic": synthetic, "folder": folder}


def timed_epoch(trainer, dataset_fn, steps):
    """Trains a warm-up epoch (a new iterator) then a timed one of `steps`; returns its images/s."""
    rows = []
    trainer.fit(
        dataset_fn,
        total_steps=trainer.current_step + 2 * steps,
        steps_per_epoch=steps,
        on_epoch_end=rows.append,
    )
    return steps * trainer.global_batch_size / rows[-1]["seconds"]


def command(s, explicit_only):
    names = [n for n in FLAG_NAMES if FLAGS[n].present] if explicit_only else FLAG_NAMES
    args = []
    for name in names:
        value = s[name]
        args.append(
            f"--{'' if value else 'no'}{name}" if isinstance(value, bool) else f"--{name}={value}"
        )
    return " ".join(["python benchmarks/gpu_training.py", *args])


def section(s, rates, gpus, replicas, global_batch):
    rate = {name: max(values) for name, values in rates.items()}
    ratio = rate["folder"] / rate["synthetic"]
    names = gpu_names(gpus)
    cores = os.cpu_count()
    if gpus:
        where = f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
        where = f"`MirroredStrategy` over {where} ({cores} CPU cores for the input)"
    else:
        where = f"`MirroredStrategy` over the CPU ({cores} cores, no GPU)"
    model = "`keras_preact.ResNet50V2`" if s["depth"] == 50 else f"ResNet-{s['depth']} v2"
    precision = (
        "`mixed_float16` with `LossScaleOptimizer(CoupledSGD)`"
        if s["mixed_precision"]
        else "float32, `CoupledSGD`"
    )
    xla = "XLA on the forward and backward pass" if s["jit_compile"] else "no XLA"
    size = s["image_size"]
    lines = ["## GPU training: ResNet-50 v2, mixed precision and XLA", ""]
    if not gpus:
        lines += [f"**{NO_GPU}.** `make bench-gpu` on a machine with a GPU measures them.", ""]
    lines += [
        f"Training images/s of {model} (1000 classes, {size}x{size}, logits) through "
        f"`keras_preact.training.Trainer` under {where}: {precision}, {xla}, "
        f"batch {s['batch_size']} per replica ({global_batch} global, {replicas} replica(s)), "
        f"`steps_per_loop={s['steps_per_loop']}`. Fed by (a) one synthetic in-memory batch, "
        "repeated, and (b) the recipes' JPEG folder pipeline (`keras_preact.data.make_dataset"
        '("folder", "train", ...)`: Inception-style crop decoded from the JPEG, flip) over '
        f"{s['num_files']} photos re-encoded at ImageNet-like sizes "
        "(`input_pipeline.write_photos`). One Trainer alternates between them for "
        f"{s['rounds']} round(s); each round is a warm-up epoch (a new iterator; the first "
        f"also compiles) and a timed epoch of {s['steps']} steps, and the best timed epoch "
        "counts. (b) / (a) is 1.0 when the pipeline keeps up; the target, >= "
        f"{TARGET:.2f}x, asks that decoding on the host's CPU cores cost the GPUs at most a "
        "tenth of their speed (it depends on the cores per GPU). "
        f"Command: `{command(s, explicit_only=not gpus)}`.",
        "",
        "| Input | Images/s (best epoch) | Images/s per replica | Images/s per timed epoch |",
        "|---|---:|---:|---|",
    ]
    for key, label in [
        ("synthetic", "(a) synthetic in-memory batches"),
        ("folder", "(b) JPEG folder pipeline"),
    ]:
        epochs = ", ".join(f"{r:.1f}" for r in rates[key])
        lines.append(f"| {label} | {rate[key]:.1f} | {rate[key] / replicas:.1f} | {epochs} |")
    lines.append(f"| (b) / (a) | {ratio:.2f}x | | |")
    per_gpu = rate["synthetic"] / replicas
    lines += ["", "Context, not a target (another model, ResNet-50 v1.5, and other GPUs):", ""]
    lines += ["| Published figure | Images/s per GPU | Ours (a) per GPU / published |"]
    lines += ["|---|---:|---:|"]
    for label, value in ANCHORS:
        ours = f"{per_gpu / value:.2f}x" if gpus else f"not compared ({NO_GPU})"
        lines.append(f"| {label} | {value:,} | {ours} |")
    if gpus:
        lines += [
            "",
            target_line(
                "JPEG folder pipeline / synthetic batches, training images/s",
                f"{ratio:.2f}x",
                f">= {TARGET:.2f}x",
                ratio >= TARGET,
            ),
        ]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    console.quiet_python_logs()  # TensorFlow's INFO lines (MirroredStrategy's devices)
    gpus = tf.config.list_physical_devices("GPU")
    s = settings(gpus)
    if not gpus:
        log(f"{NO_GPU} (settings: {command(s, explicit_only=False)})")
    if s["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = training.make_strategy("mirrored")
    replicas = strategy.num_replicas_in_sync
    global_batch = s["batch_size"] * replicas
    with tempfile.TemporaryDirectory() as root:
        log(f"writing {s['num_files']} JPEGs")
        write_photos(root, s["num_files"])
        fns = data_fns(root, s, global_batch)
        log(
            f"building ResNet-{s['depth']} v2 on {replicas} replica(s), global batch {global_batch}"
        )
        trainer = make_trainer(strategy, s, global_batch)
        rates = {name: [] for name in fns}
        for r in range(s["rounds"]):
            for name, fn in fns.items():
                start = time.perf_counter()
                rates[name].append(timed_epoch(trainer, fn, s["steps"]))
                log(
                    f"round {r + 1}/{s['rounds']}, {name}: {rates[name][-1]:.1f} images/s "
                    f"({time.perf_counter() - start:.0f} s with its warm-up epoch)"
                )
        trainer.close()
    print(section(s, rates, gpus, replicas, global_batch))


if __name__ == "__main__":
    app.run(main)
