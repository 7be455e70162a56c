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

With `--batch_grid` (default 1, 16, 64), the default layout and the peer are
also measured at each of those batch sizes in float32 and, where the CPU has
bfloat16 instructions (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo),
mixed_bfloat16, in the same interleaved rounds; the machine's float32 and
bfloat16 matrix-multiply rate (a `--gemm_size` square `tf.linalg.matmul`,
best of `--gemm_runs`) is measured in the same process, and every figure of
the grid is also given as a fraction of the GEMM rate of its precision
(FLOPs = 2 x multiply-adds; training = 3 x the forward pass). With
`--profile` (the default), one step of the default layout in each grid cell
then runs under the TensorFlow profiler, and a third table says where its op
time goes (convolutions, their gradients, batch norm, ReLU, pooling, casts,
the rest), and how fast the convolutions themselves run against GEMM.

Prints a Markdown section for BENCHMARKS.md (see benchmarks/report.py):

    python benchmarks/model_throughput.py --batch_size=16 --steps=3 --rounds=2 \\
        --batch_grid=1,16,64 --grid_images=32
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from contract import bf16_cpu_flags, target_line  # noqa: E402

import keras_preact  # noqa: E402
from keras_preact.analysis import cost  # noqa: E402

# name -> (Keras dtype policy, jit_compile); ratios are against the peer in the first one given.
CONFIGS = {
    "float32": ("float32", False),
    "float32+xla": ("float32", True),
    "mixed_bfloat16": ("mixed_bfloat16", False),
}
# The batch grid's configurations, each with the dtype of its GEMM and its target fraction of it.
GRID_CONFIGS = {"float32": (tf.float32, 0.70), "mixed_bfloat16": (tf.bfloat16, 0.60)}
FLOPS_PER_MAC = {"train": 6, "infer": 2}  # 2 FLOPs a multiply-add; backward = 2 x forward

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
flags.DEFINE_list(
    "batch_grid",
    ["1", "16", "64"],
    "batch sizes at which the default layout and the peer are also measured, in float32 and "
    "(on a CPU with bfloat16 instructions) mixed_bfloat16, with the GEMM rate; empty: none",
)
flags.DEFINE_integer(
    "grid_images",
    32,
    "timed images per round at a grid batch size other than --batch_size (at least one step)",
)
flags.DEFINE_integer("gemm_size", 4096, "n of the n x n x n matmul that measures the GEMM rate")
flags.DEFINE_integer("gemm_runs", 3, "timed matmuls per dtype; the best counts")
flags.DEFINE_bool(
    "profile", True, "profile one step of the default layout per grid cell: where the time goes"
)
FLAGS = flags.FLAGS

DEFAULT_LAYOUT = "paper"
MAC_RATE_TARGET = 1.00  # default layout / peer, multiply-adds per second
BEST_TARGET = 1.25  # best configuration / peer (float32, no XLA), training images per second


def log(message):
    print(message, file=sys.stderr, flush=True)


def gemm_rate(dtype, n, runs):
    """GFLOP/s of an `n x n` by `n x n` `tf.linalg.matmul` in `dtype`, best of `runs` (2 n^3 FLOPs)."""
    rng = np.random.default_rng(0)
    a, b = (tf.cast(rng.standard_normal((n, n)).astype("float32"), dtype) for _ in range(2))
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)[:1, :1]))
    matmul(a, b).numpy()  # tracing and warm-up
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def make_steps(model, images, labels, optimizer, jit_compile):
    """`(train_step, infer_step)`, `tf.function`s on fixed inputs."""
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

    return train_step, infer_step


class Contender:
    """A model with compiled training and inference steps on fixed inputs, one pair per batch size.

    `inputs` maps each batch size to `(images, labels)`; `rates[kind, batch]` collects
    images/s per round.
    """

    def __init__(self, name, model, inputs, jit_compile, input_shape):
        self.name = name
        self.multiply_adds = cost.multiply_adds(model, input_shape)
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        optimizer.build(model.trainable_variables)
        self.steps, self.rates = {}, {}
        start = time.perf_counter()
        for batch, (images, labels) in inputs.items():
            train_step, infer_step = make_steps(model, images, labels, optimizer, jit_compile)
            for kind, step in (("train", train_step), ("infer", infer_step)):
                step().numpy()  # tracing (and XLA compilation), and a warm-up step
                self.steps[kind, batch] = step
                self.rates[kind, batch] = []
        batches = ", ".join(str(b) for b in inputs)
        log(f"  {name} (batch {batches}): traced in {time.perf_counter() - start:.0f} s")

    def measure(self, steps_at):
        """One round: `steps_at[batch]` timed steps of every step function."""
        for (kind, batch), step in self.steps.items():
            steps = steps_at[batch]
            start = time.perf_counter()
            for _ in range(steps):
                out = step()
            out.numpy()
            self.rates[kind, batch].append(batch * steps / (time.perf_counter() - start))


def _median_ratio(ours, peer):
    return float(np.median([a / b for a, b in zip(ours, peer)]))


def make_inputs(batches, shape):
    """`{batch: (images, labels)}` for keras-preact (raw pixels) and for the peer (its scaling)."""
    rng = np.random.default_rng(0)
    ours, peer = {}, {}
    for batch in batches:
        images = tf.constant(rng.uniform(0, 255, (batch, *shape)).astype("float32"))
        labels = tf.constant(rng.integers(0, 1000, batch))
        ours[batch] = images, labels
        peer[batch] = keras.applications.resnet_v2.preprocess_input(images), labels
    return ours, peer


def build_contenders(shape, grid_configs):
    """The peer and each layout in each of `--configs`, traced, in measurement order.

    In `grid_configs`, the peer and the default layout also get the `--batch_grid` sizes.
    """
    f = FLAGS
    grid = [int(b) for b in f.batch_grid]
    all_batches = sorted({f.batch_size, *grid})
    ours_inputs, peer_inputs = make_inputs(all_batches, shape)
    peer_builder = getattr(keras.applications, f.model)
    contenders = []
    log(f"Building and tracing {f.model} contenders at {f.image_size}, batch {f.batch_size} ...")
    for config in f.configs:
        policy, jit_compile = CONFIGS[config]
        suffix = "" if config == "float32" else f" [{config}]"
        batches = all_batches if config in grid_configs else [f.batch_size]
        keras.mixed_precision.set_global_policy(policy)
        try:
            peer_model = peer_builder(weights=None, input_shape=shape)
            name = f"keras.applications.{f.model}{suffix}"
            inputs = {b: peer_inputs[b] for b in batches}
            contenders.append(Contender(name, peer_model, inputs, jit_compile, shape))
            for layout in f.layouts:
                model = getattr(keras_preact, f.model)(layout=layout)
                name = f"keras_preact.{f.model}(layout={layout!r}){suffix}"
                mine = batches if layout == DEFAULT_LAYOUT else [f.batch_size]
                inputs = {b: ours_inputs[b] for b in mine}
                contenders.append(Contender(name, model, inputs, jit_compile, shape))
        finally:
            keras.mixed_precision.set_global_policy("float32")
    return contenders


def steps_per_batch(batches):
    """Timed steps per round at each batch size: `--steps` at `--batch_size`, else about
    `--grid_images` images (at least one step)."""
    f = FLAGS
    return {b: f.steps if b == f.batch_size else max(1, round(f.grid_images / b)) for b in batches}


def check_flags():
    """Raises `app.UsageError` for `--configs` or `--batch_grid` it cannot measure."""
    f = FLAGS
    unknown = sorted(set(f.configs) - set(CONFIGS))
    if unknown or not f.configs or f.configs[0] != "float32":
        raise app.UsageError(
            f"--configs={','.join(f.configs)}: give float32 first (the baseline of the "
            f"ratios), then any of {', '.join(CONFIGS)}"
            + (f"; unknown: {unknown}" if unknown else "")
        )
    if not all(b.isdigit() and int(b) > 0 for b in f.batch_grid):
        raise app.UsageError(f"--batch_grid={','.join(f.batch_grid)}: give positive integers")
    if f.batch_grid and DEFAULT_LAYOUT not in f.layouts:
        raise app.UsageError(f"--batch_grid measures layout {DEFAULT_LAYOUT}: add it to --layouts")


def main_summary(contenders):
    """`{(name, kind): (images/s ratio, MAC/s ratio)}` and `(name, "same-config")` at
    `--batch_size`, against the peer in float32 (the first contender)."""
    batch = FLAGS.batch_size
    peer = config_peer = contenders[0]
    summary = {}
    for c in contenders:
        if c.name.startswith("keras.applications."):
            config_peer = c
        work = c.multiply_adds / peer.multiply_adds
        for kind in ("train", "infer"):
            ratio = _median_ratio(c.rates[kind, batch], peer.rates[kind, batch])
            summary[c.name, kind] = ratio, ratio * work
        same = _median_ratio(c.rates["train", batch], config_peer.rates["train", batch])
        summary[c.name, "same-config"] = same
    return summary


def print_main_table(contenders, summary):
    f = FLAGS
    print(
        "| model | G MACs | train img/s | train ratio | train MAC/s ratio "
        "| train same-config ratio | infer img/s | infer ratio | infer MAC/s ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in contenders:
        cells = [c.name, f"{c.multiply_adds / 1e9:.3f}"]
        for kind in ("train", "infer"):
            ratio, mac_ratio = summary[c.name, kind]
            rate = np.median(c.rates[kind, f.batch_size])
            cells += [f"{rate:.2f}", f"{ratio:.2f}x", f"{mac_ratio:.2f}x"]
            if kind == "train":
                cells.append(f"{summary[c.name, 'same-config']:.2f}x")
        print("| " + " | ".join(cells) + " |")
    print()


def grid_pairs(contenders, grid_configs):
    """`{config: (peer, ours)}`: the contenders of the batch grid."""
    f = FLAGS
    pairs = {}
    for config in grid_configs:
        suffix = "" if config == "float32" else f" [{config}]"
        named = {c.name: c for c in contenders}
        pairs[config] = (
            named[f"keras.applications.{f.model}{suffix}"],
            named[f"keras_preact.{f.model}(layout={DEFAULT_LAYOUT!r}){suffix}"],
        )
    return pairs


def grid_cells(contenders, grid_configs, gemm):
    """`{(config, kind, batch): (peer img/s, ours img/s, MAC/s ratio, peer/GEMM, ours/GEMM)}`."""
    cells = {}
    for config, (peer, ours) in grid_pairs(contenders, grid_configs).items():
        for kind, batch in ours.steps:
            rates = [np.median(c.rates[kind, batch]) for c in (peer, ours)]
            ratio = _median_ratio(ours.rates[kind, batch], peer.rates[kind, batch])
            fractions = [
                rate * c.multiply_adds * FLOPS_PER_MAC[kind] / (gemm[config] * 1e9)
                for rate, c in zip(rates, (peer, ours))
            ]
            mac_ratio = ratio * ours.multiply_adds / peer.multiply_adds
            cells[config, kind, batch] = (*rates, mac_ratio, *fractions)
    return cells


def print_intro(grid_configs, bf16_flags):
    f = FLAGS
    command = " ".join(["python", "benchmarks/model_throughput.py"] + sys.argv[1:])
    print(f"## Model throughput: keras-preact {f.model} vs keras.applications\n")
    if not f.batch_grid:
        grid = "No batch grid (`--batch_grid` empty). "
    elif "mixed_bfloat16" in grid_configs:
        grid = (
            "The second table is the batch grid: the default layout and the peer at batch "
            f"{', '.join(f.batch_grid)} in float32 and mixed_bfloat16 (this CPU has "
            f"{' and '.join(bf16_flags)}), each figure also as a fraction of the machine's GEMM "
            "rate in its precision. "
        )
    else:
        why = (
            "this CPU has no bfloat16 instructions (neither avx512_bf16 nor amx_bf16 in "
            "/proc/cpuinfo), so mixed_bfloat16 is left out of it"
            if not bf16_flags
            else "mixed_bfloat16 is not in --configs"
        )
        grid = (
            "The second table is the batch grid: the default layout and the peer at batch "
            f"{', '.join(f.batch_grid)} in float32 only ({why}), each figure also as a "
            "fraction of the machine's float32 GEMM rate. "
        )
    print(
        f"Batch {f.batch_size} at {f.image_size}x{f.image_size}, "
        f"{f.steps} timed steps per round after a warm-up, {f.rounds} interleaved rounds; "
        "training is forward + backward + SGD-momentum update in one `tf.function`. "
        "Configurations in [brackets]: XLA (`jit_compile=True`) or a Keras mixed-precision "
        "policy; none is float32 without XLA. Ratios are against the peer in float32 without "
        "XLA, per round, median over rounds; *same-config ratio* is against the peer in the "
        "same configuration. *G MACs* are the multiply-adds per image counted from each "
        "model's graph, and *MAC/s ratio* compares achieved multiply-adds per second. "
        f"{grid}Targets: the default layout ({DEFAULT_LAYOUT}) at least as many multiply-adds "
        "per second as the peer (it does more work per image, so that is the fair measure: "
        f"{MAC_RATE_TARGET:.2f}x MAC/s = the MAC ratio in images/s); the grid's default "
        "layout at least "
        + " and ".join(f"{t:.2f} of {c} GEMM" for c, (_, t) in GRID_CONFIGS.items())
        + " (what a convolutional net on oneDNN could reach: most of its work is GEMM-like). "
        f"Command: `{command}`\n"
    )


def print_grid(cells, gemm, steps_at):
    f = FLAGS
    print(
        "Batch grid, default layout vs peer: timed steps per round "
        + ", ".join(f"{steps_at[int(b)]} at batch {b}" for b in f.batch_grid)
        + f", {f.rounds} rounds, interleaved with the rest. GEMM: the best of {f.gemm_runs} "
        f"`tf.linalg.matmul` of two {f.gemm_size}x{f.gemm_size} matrices in a `tf.function`, "
        "before and after the rounds; "
        + "; ".join(f"{GRID_CONFIGS[c][0].name} {rate:.0f} GFLOP/s" for c, rate in gemm.items())
        + ". *of GEMM*: the model's FLOP/s (2 per multiply-add, 3 forward passes' worth for a "
        "training step) over the GEMM rate of its precision.\n"
    )
    print(
        "| precision | step | batch | peer img/s | ours img/s | MAC/s ratio | peer of GEMM "
        "| ours of GEMM |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    order = sorted(cells, key=lambda key: (key[0], key[1] != "train", key[2]))
    for config, kind, batch in order:
        peer, ours, ratio, peer_f, ours_f = cells[config, kind, batch]
        step = "training" if kind == "train" else "inference"
        print(
            f"| {config} | {step} | {batch} | {peer:.2f} | {ours:.2f} | {ratio:.2f}x "
            f"| {peer_f:.2f} | {ours_f:.2f} |"
        )
    print()


def print_targets(contenders, summary, cells):
    f = FLAGS
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
    for line in grid_target_lines(cells):
        print(line)


def grid_target_lines(cells):
    """Per precision and step: the MAC/s ratio and the fraction of GEMM at every grid batch."""
    lines = []
    for config in GRID_CONFIGS:
        for kind, label in (("train", "training"), ("infer", "inference")):
            batches = sorted(b for c, k, b in cells if (c, k) == (config, kind))
            if not batches:
                continue
            at = f"at batch {', '.join(map(str, batches))}"
            ratios = [cells[config, kind, b][2] for b in batches]
            fractions = [cells[config, kind, b][4] for b in batches]
            lines.append(
                target_line(
                    f"grid, default layout ({DEFAULT_LAYOUT}) / peer, {config} {label} "
                    f"multiply-adds per second {at}",
                    ", ".join(f"{r:.2f}x" for r in ratios),
                    f">= {MAC_RATE_TARGET:.2f}x at each",
                    min(ratios) >= MAC_RATE_TARGET,
                )
            )
            target = GRID_CONFIGS[config][1]
            lines.append(
                target_line(
                    f"grid, default layout ({DEFAULT_LAYOUT}) {config} {label} FLOP/s as a "
                    f"fraction of {config} GEMM {at}",
                    ", ".join(f"{x:.2f}" for x in fractions),
                    f">= {target:.2f} at each",
                    min(fractions) >= target,
                )
            )
    return lines


# What a TensorFlow op type does (its oneDNN `_MklNative` / `_Mkl` prefix dropped), for the
# profile table, in the table's order; anything else is "other".
OP_CLASSES = (
    ("conv", r"(PadWith)?(Fused)?Conv2D$|DepthwiseConv2dNative$"),
    ("conv grad, input", r"Conv2DBackpropInput"),
    ("conv grad, filter", r"Conv2DBackpropFilter"),
    ("batch norm", r"BatchNorm"),
    ("ReLU", r"^Relu"),
    ("pooling", r"Pool"),
    ("casts", r"^Cast$"),
)
CONV_CLASSES = ("conv", "conv grad, input", "conv grad, filter")


def op_class(op_type):
    """The `OP_CLASSES` name of a TensorFlow op type, e.g. `_MklNativeFusedConv2D` -> "conv"."""
    op_type = re.sub(r"^_(MklNative|Mkl)?", "", op_type)
    for name, pattern in OP_CLASSES:
        if re.search(pattern, op_type):
            return name
    return "other"


def op_time_shares(step):
    """`{op class: share}` of the op time of one call of `step` under the TensorFlow profiler,
    or None where the profiler's trace format cannot be read.

    The ops are the events named `name:OpType` on the executor's threads
    (`tf_Compute`); ops that run at once (inter-op parallelism) each count in
    full, so the shares are of the summed op time.
    """
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        return None
    logdir = tempfile.mkdtemp(prefix="model_throughput_profile_")
    try:
        tf.profiler.experimental.start(logdir)
        try:
            step().numpy()
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        for root, _, files in os.walk(logdir):
            for name in files:
                if name.endswith(".xplane.pb"):
                    with open(os.path.join(root, name), "rb") as trace:
                        space.MergeFromString(trace.read())
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    times = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                match = re.fullmatch(r"[^:]+:(\w+)", plane.event_metadata[event.metadata_id].name)
                if match:
                    times[op_class(match.group(1))] += event.duration_ps
    total = sum(times.values())
    return {name: t / total for name, t in times.items()} if total else None


def profile_grid(contenders, grid_configs):
    """`{(config, kind, batch): op_time_shares}` of the default layout's grid steps."""
    shares = {}
    for config, (_, ours) in grid_pairs(contenders, grid_configs).items():
        for (kind, batch), step in ours.steps.items():
            shares[config, kind, batch] = op_time_shares(step)
            if shares[config, kind, batch] is None:
                return {}
    log("  profiled the grid steps")
    return shares


def print_profile(shares, cells):
    if not shares:
        print(
            "No profile: the TensorFlow profiler's trace format "
            "(`tensorflow.tsl.profiler.protobuf`) is not importable here.\n"
        )
        return
    names = [name for name, _ in OP_CLASSES] + ["other"]
    print(
        "Where the time goes: one step of the default layout per grid cell under the "
        "TensorFlow profiler (`tf.profiler.experimental`), each op's time summed by what it "
        "does (op types with oneDNN's `_MklNative` prefix dropped; *conv* includes the "
        "convolutions oneDNN fused with a batch norm, ReLU or padding; *other*: adds, "
        "multiplies, pads, slices, the dense layer, variable updates, ...), as shares of the "
        "summed op time. *convs of GEMM* is the step's fraction of GEMM over the "
        "convolutions' share: the rate the convolutions ran at, an upper bound for the whole "
        "step if everything else took no time (above 1 where oneDNN's convolutions outrun the "
        "`tf.linalg.matmul` that measures GEMM).\n"
    )
    print("| precision | step | batch | of GEMM | " + " | ".join(names) + " | convs of GEMM |")
    print("|---|---|---:|---:|" + "---:|" * (len(names) + 1))
    for key in sorted(shares, key=lambda k: (k[0], k[1] != "train", k[2])):
        config, kind, batch = key
        share = shares[key]
        fraction = cells[key][4]
        convs = sum(share.get(name, 0.0) for name in CONV_CLASSES)
        row = " | ".join(f"{share.get(name, 0.0):.0%}" for name in names)
        step = "training" if kind == "train" else "inference"
        print(f"| {config} | {step} | {batch} | {fraction:.2f} | {row} | {fraction / convs:.2f} |")
    print()


def main(argv):
    del argv
    f = FLAGS
    check_flags()
    shape = (f.image_size, f.image_size, 3)
    bf16_flags = bf16_cpu_flags()
    grid_configs = []
    if f.batch_grid:
        grid_configs = [c for c in GRID_CONFIGS if c in f.configs]
        if not bf16_flags and "mixed_bfloat16" in grid_configs:
            grid_configs.remove("mixed_bfloat16")
    gemm = measure_gemm(grid_configs)
    contenders = build_contenders(shape, grid_configs)
    steps_at = steps_per_batch({b for c in contenders for _, b in c.steps})
    for r in range(f.rounds):
        for contender in contenders:
            contender.measure(steps_at)
        log(f"  round {r + 1} of {f.rounds} done")
    gemm = {c: max(rate, measure_gemm([c])[c]) for c, rate in gemm.items()}
    shares = profile_grid(contenders, grid_configs) if f.profile and grid_configs else None
    summary = main_summary(contenders)
    cells = grid_cells(contenders, grid_configs, gemm)
    print_intro(grid_configs, bf16_flags)
    print_main_table(contenders, summary)
    if grid_configs:
        print_grid(cells, gemm, steps_at)
    if shares is not None:
        print_profile(shares, cells)
    print_targets(contenders, summary, cells)


def measure_gemm(configs):
    """`{config: GFLOP/s}` of the GEMM in each configuration's compute dtype."""
    f = FLAGS
    gemm = {}
    for config in configs:
        dtype = GRID_CONFIGS[config][0]
        gemm[config] = gemm_rate(dtype, f.gemm_size, f.gemm_runs)
        log(f"GEMM {dtype.name} {f.gemm_size}^3: {gemm[config]:.0f} GFLOP/s")
    return gemm


if __name__ == "__main__":
    app.run(main)
