"""Is a keras-preact ResNet50V2 as fast as keras.applications' ResNet50V2?

Measures in one process, in interleaved rounds, the training and inference
images/s of keras_preact.ResNet50V2 in its layouts and of the peer,
keras.applications.ResNet50V2, on the same inputs, in each configuration:
float32, float32 with XLA (`jit_compile=True`) and `mixed_bfloat16` (Keras
mixed precision: bfloat16 compute, float32 weights; fast where the CPU has
bfloat16 instructions, such as AVX512-BF16 or AMX). The layouts do different
work (the paper's and timm's put the stride of a stage on its first unit's
3x3 convolution, so that unit's first 1x1 convolution runs at the higher
resolution; keras.applications puts it on the previous stage's last unit),
so each model's multiply-adds per image are counted from its traced graph
(`keras_preact.analysis.cost`) and the achieved multiply-adds per second are
compared as well. A ratio is ours / peer in the same round (> 1: faster);
the table gives the median over rounds.

Prints a Markdown section for BENCHMARKS.md (see benchmarks/report.py):

    python benchmarks/model_throughput.py --batch_size=16 --steps=3 --rounds=2
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from contract import target_line  # noqa: E402

import keras_preact  # noqa: E402
from keras_preact.analysis import cost  # noqa: E402

# name -> (Keras dtype policy, jit_compile); ratios are against the peer in the first one given.
CONFIGS = {
    "float32": ("float32", False),
    "float32+xla": ("float32", True),
    "mixed_bfloat16": ("mixed_bfloat16", False),
}

flags.DEFINE_string("model", "ResNet50V2", "keras-preact builder; the peer is keras.applications'")
flags.DEFINE_integer("batch_size", 16, "images per step")
flags.DEFINE_integer("image_size", 224, "input height and width")
flags.DEFINE_integer("steps", 3, "timed steps per round (after one warm-up step)")
flags.DEFINE_integer("rounds", 2, "interleaved measurement rounds")
flags.DEFINE_list("layouts", ["paper", "keras"], "keras-preact layouts to measure")
flags.DEFINE_list(
    "configs",
    list(CONFIGS),
    f"configurations to measure, each for the peer and every layout: {', '.join(CONFIGS)}",
)
FLAGS = flags.FLAGS

DEFAULT_LAYOUT = "paper"
MAC_RATE_TARGET = 1.00  # default layout / peer, multiply-adds per second
BEST_TARGET = 1.25  # best configuration / peer (float32, no XLA), training images per second


def log(message):
    print(message, file=sys.stderr, flush=True)


class Contender:
    """A model with its compiled training and inference steps on fixed inputs."""

    def __init__(self, name, model, images, labels, jit_compile, input_shape):
        self.name = name
        self.multiply_adds = cost.multiply_adds(model, input_shape)
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        loss_fn = keras.losses.SparseCategoricalCrossentropy()

        @tf.function(jit_compile=jit_compile)
        def train_step():
            with tf.GradientTape() as tape:
                loss = loss_fn(labels, model(images, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        @tf.function(jit_compile=jit_compile)
        def infer_step():
            return model(images, training=False)

        self.steps = {"train": train_step, "infer": infer_step}
        self.rates = {"train": [], "infer": []}  # images/s per round
        start = time.perf_counter()
        for step in self.steps.values():
            step().numpy()  # tracing (and XLA compilation)
        log(f"  {name}: traced in {time.perf_counter() - start:.0f} s")

    def measure(self, steps, batch):
        for kind, step in self.steps.items():
            start = time.perf_counter()
            for _ in range(steps):
                out = step()
            out.numpy()
            self.rates[kind].append(batch * steps / (time.perf_counter() - start))


def _median_ratio(ours, peer):
    return float(np.median([a / b for a, b in zip(ours, peer)]))


def build_contenders(images, labels, shape):
    """The peer and each layout in each of `--configs`, traced, in measurement order."""
    f = FLAGS
    peer_builder = getattr(keras.applications, f.model)
    contenders = []
    log(f"Building and tracing {f.model} contenders at {f.image_size}, batch {f.batch_size} ...")
    peer_inputs = keras.applications.resnet_v2.preprocess_input(images)
    for config in f.configs:
        policy, jit_compile = CONFIGS[config]
        suffix = "" if config == "float32" else f" [{config}]"
        keras.mixed_precision.set_global_policy(policy)
        try:
            peer_model = peer_builder(weights=None, input_shape=shape)
            name = f"keras.applications.{f.model}{suffix}"
            contenders.append(Contender(name, peer_model, peer_inputs, labels, jit_compile, shape))
            for layout in f.layouts:
                model = getattr(keras_preact, f.model)(layout=layout)
                name = f"keras_preact.{f.model}(layout={layout!r}){suffix}"
                contenders.append(Contender(name, model, images, labels, jit_compile, shape))
        finally:
            keras.mixed_precision.set_global_policy("float32")
    return contenders


def main(argv):
    del argv
    f = FLAGS
    rng = np.random.default_rng(0)
    shape = (f.image_size, f.image_size, 3)
    images = tf.constant(rng.uniform(0, 255, (f.batch_size, *shape)).astype("float32"))
    labels = tf.constant(rng.integers(0, 1000, f.batch_size))
    unknown = sorted(set(f.configs) - set(CONFIGS))
    if unknown or not f.configs or f.configs[0] != "float32":
        raise app.UsageError(
            f"--configs={','.join(f.configs)}: give float32 first (the baseline of the "
            f"ratios), then any of {', '.join(CONFIGS)}"
            + (f"; unknown: {unknown}" if unknown else "")
        )
    contenders = build_contenders(images, labels, shape)
    for r in range(f.rounds):
        for contender in contenders:
            contender.measure(f.steps, f.batch_size)
        log(f"  round {r + 1} of {f.rounds} done")

    peer = contenders[0]
    command = " ".join(["python", "benchmarks/model_throughput.py"] + sys.argv[1:])
    print(f"## Model throughput: keras-preact {f.model} vs keras.applications\n")
    print(
        f"Batch {f.batch_size} at {f.image_size}x{f.image_size}, "
        f"{f.steps} timed steps per round after a warm-up, {f.rounds} interleaved rounds; "
        "training is forward + backward + SGD-momentum update in one `tf.function`. "
        "Configurations in [brackets]: XLA (`jit_compile=True`) or a Keras mixed-precision "
        "policy; none is float32 without XLA. Ratios are against the peer in float32 without "
        "XLA, per round, median over rounds; *same-config ratio* is against the peer in the "
        "same configuration. *G MACs* are the multiply-adds per image counted from each "
        "model's graph, and *MAC/s ratio* compares achieved multiply-adds per second. "
        f"Command: `{command}`\n"
    )
    print(
        "| model | G MACs | train img/s | train ratio | train MAC/s ratio "
        "| train same-config ratio | infer img/s | infer ratio | infer MAC/s ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    config_peer = peer
    for c in contenders:
        if c.name.startswith("keras.applications."):
            config_peer = c
        work = c.multiply_adds / peer.multiply_adds
        cells = [c.name, f"{c.multiply_adds / 1e9:.3f}"]
        for kind in ("train", "infer"):
            ratio = _median_ratio(c.rates[kind], peer.rates[kind])
            summary[c.name, kind] = ratio, ratio * work
            cells += [f"{np.median(c.rates[kind]):.2f}", f"{ratio:.2f}x", f"{ratio * work:.2f}x"]
            if kind == "train":
                same = _median_ratio(c.rates[kind], config_peer.rates[kind])
                summary[c.name, "same-config"] = same
                cells.append(f"{same:.2f}x")
        print("| " + " | ".join(cells) + " |")
    print()
    default = f"keras_preact.{f.model}(layout={DEFAULT_LAYOUT!r})"
    for kind, label in (("train", "training"), ("infer", "inference")):
        if (default, kind) in summary:
            value = summary[default, kind][1]
            print(
                target_line(
                    f"default layout ({DEFAULT_LAYOUT}) / peer, {label} multiply-adds per second",
                    f"{value:.2f}x",
                    f">= {MAC_RATE_TARGET:.2f}x",
                    value >= MAC_RATE_TARGET,
                )
            )
    ours = [c for c in contenders if c.name.startswith("keras_preact.")]
    if len(f.configs) > 1 and ours:
        best = max(ours, key=lambda c: summary[c.name, "train"][0])
        value = summary[best.name, "train"][0]
        same = summary[best.name, "same-config"]
        print(
            target_line(
                f"best configuration ({best.name}; the peer in the same configuration: "
                f"{value / same:.2f}x) / peer, training images per second",
                f"{value:.2f}x",
                f">= {BEST_TARGET:.2f}x",
                value >= BEST_TARGET,
            )
        )


if __name__ == "__main__":
    app.run(main)
