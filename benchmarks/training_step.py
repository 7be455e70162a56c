"""Does the custom training loop cost speed? `Trainer` against Keras `Model.fit`, same work.

Both train the same CIFAR pre-activation ResNet (logits, from-logits
cross-entropy, `CoupledSGD`, one step per `tf.function` call, no XLA) on the
same in-memory batches under the default strategy. Each is built and warmed
up once (tracing); then the two alternate for `--rounds` rounds, each round one
`fit` call per loop of `--epochs` epochs of `--steps` steps. The first epoch
of a call absorbs the start of its data iterator; every later epoch is timed
(wall clock and this process's CPU time, from one epoch end to the next), and
the best epoch of each loop counts (the machine may be shared).

Prints one Markdown section (the benchmarks' contract, see
benchmarks/README.md) to stdout; progress goes to stderr. From the repository root:

    python benchmarks/training_step.py --depth=20 --batch_size=64 --steps=5 --epochs=3 --rounds=4
"""

from __future__ import annotations

import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from contract import target_line  # noqa: E402

from keras_preact import CIFARResNetV2, training  # noqa: E402

flags.DEFINE_integer("depth", 20, "CIFAR ResNet depth (6n+2).")
flags.DEFINE_integer("width", 16, "channels of the first stage")
flags.DEFINE_integer("batch_size", 64, "images per step")
flags.DEFINE_integer("steps", 5, "steps per epoch")
flags.DEFINE_integer("epochs", 3, "epochs per fit call; all but the first are timed", lower_bound=2)
flags.DEFINE_integer("rounds", 4, "alternating fit calls of each loop")
FLAGS = flags.FLAGS
FLAG_NAMES = ("depth", "width", "batch_size", "steps", "epochs", "rounds")

# Trainer / fit below this is a cost of the loop, not noise (see the section's paragraph).
TARGET = 0.95


def log(message):
    print(message, file=sys.stderr, flush=True)


def _stamp():
    """(wall-clock seconds, CPU seconds of this process)."""
    cpu = os.times()
    return time.perf_counter(), cpu.user + cpu.system


def _data(batch):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * 4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch * 4).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()


def _model():
    keras.utils.set_random_seed(0)
    return CIFARResNetV2(FLAGS.depth, width=FLAGS.width, classifier_activation=None)


class FitLoop:
    """Keras `Model.fit`, compiled once; `run` is one more `fit` call."""

    def __init__(self, batch):
        self.model = _model()
        self.model.compile(
            optimizer=training.CoupledSGD(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=False,
        )
        self.data = _data(batch)

    def run(self, epochs, steps):
        """Returns a `_stamp()` at the end of each epoch."""
        stamps = []
        callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: stamps.append(_stamp()))
        self.model.fit(
            self.data, steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=[callback]
        )
        return stamps


class TrainerLoop:
    """`keras_preact.training.Trainer`, built once; `run` is one more `fit` call."""

    def __init__(self, batch):
        self.trainer = training.Trainer(
            tf.distribute.get_strategy(),
            _model,
            lambda: training.CoupledSGD(0.01),
            global_batch_size=batch,
            steps_per_loop=1,
            verbose=0,
        )
        self.dataset_fn = lambda ctx: _data(batch)  # noqa: E731

    def run(self, epochs, steps):
        """Returns a `_stamp()` at the end of each epoch."""
        stamps = []
        self.trainer.fit(
            self.dataset_fn,
            total_steps=self.trainer.current_step + epochs * steps,
            steps_per_epoch=steps,
            on_epoch_end=lambda row: stamps.append(_stamp()),
        )
        return stamps


def timed_epochs(loop, epochs, steps, batch):
    """[(images/s, CPU ms per image)] of every epoch of one `fit` call but the first."""
    stamps = loop.run(epochs, steps)
    images = steps * batch
    return [
        (images / (wall - last_wall), 1e3 * (cpu - last_cpu) / images)
        for (last_wall, last_cpu), (wall, cpu) in zip(stamps, stamps[1:])
    ]


def command():
    args = " ".join(f"--{name}={FLAGS[name].value}" for name in FLAG_NAMES)
    return f"python benchmarks/training_step.py {args}"


def section(results):
    rate = {name: max(r for r, _ in runs) for name, runs in results.items()}
    cpu = {name: min(c for _, c in runs) for name, runs in results.items()}
    ratio = rate["trainer"] / rate["fit"]
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    timed = FLAGS.rounds * (FLAGS.epochs - 1)
    lines = [
        "## Custom training loop vs Keras fit",
        "",
        f"Images/s of training a CIFAR pre-activation ResNet-{FLAGS.depth} "
        f"(width {FLAGS.width}, batch {FLAGS.batch_size} of 32x32 in-memory images, logits with "
        "from-logits cross-entropy, `CoupledSGD`, no XLA, default strategy, on the "
        f"{device}) with `keras_preact.training.Trainer` (`steps_per_loop=1`) and with "
        "Keras `Model.fit` (`steps_per_execution=1`). Each loop is built and warmed up "
        f"once; then they alternate for {FLAGS.rounds} rounds (the order swapped every round), "
        f"each round one `fit` call per loop of {FLAGS.epochs} epochs of {FLAGS.steps} steps: "
        f"the first epoch of a call absorbs its iterator's start, the others are timed "
        f"({timed} per loop) and the best one counts. CPU ms/image is this process's CPU "
        "time, steadier than the wall clock on a shared machine. The target, Trainer / fit "
        f">= {TARGET:.2f}x, allows for run-to-run noise (a few percent) and nothing more: both "
        "loops run the same forward, backward and optimizer work per step, so a larger gap "
        "is an overhead of the loop itself (retracing, host round trips, per-epoch work). "
        f"Command: `{command()}`.",
        "",
        "| Loop | Images/s (best epoch) | CPU ms/image (best epoch) | Images/s per timed epoch |",
        "|---|---:|---:|---|",
    ]
    for key, label in [("fit", "Keras `Model.fit`"), ("trainer", "`Trainer`")]:
        epochs = ", ".join(f"{r:.0f}" for r, _ in results[key])
        lines.append(f"| {label} | {rate[key]:.1f} | {cpu[key]:.2f} | {epochs} |")
    lines.append(
        f"| Trainer / fit | {ratio:.2f}x | {cpu['fit'] / cpu['trainer']:.2f}x "
        "(images per CPU second) | |"
    )
    target = target_line(
        "Trainer / fit, images/s", f"{ratio:.2f}x", f">= {TARGET:.2f}x", ratio >= TARGET
    )
    lines += ["", target]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # Keras warns that fit ignores shuffle=True for a tf.data.Dataset, once per call.
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    steps, batch, epochs = FLAGS.steps, FLAGS.batch_size, FLAGS.epochs
    log(f"ResNet-{FLAGS.depth}, batch {batch}: building and warming up both loops")
    loops = {"fit": FitLoop(batch), "trainer": TrainerLoop(batch)}
    for loop in loops.values():
        loop.run(1, steps)  # warm-up: tracing, thread pools
    results = {name: [] for name in loops}
    for r in range(FLAGS.rounds):
        order = list(loops) if r % 2 == 0 else list(reversed(loops))
        for name in order:
            results[name] += timed_epochs(loops[name], epochs, steps, batch)
        log(
            f"round {r + 1}/{FLAGS.rounds}: best epoch so far: fit "
            f"{max(r for r, _ in results['fit']):.1f}, Trainer "
            f"{max(r for r, _ in results['trainer']):.1f} images/s"
        )
    print(section(results))


if __name__ == "__main__":
    app.run(main)
