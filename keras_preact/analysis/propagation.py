"""Signal propagation at initialisation, unit by unit: the paper's Eqns. 4-8 against 9-10.

With identity shortcuts and nothing after the addition, a unit computes
x_{l+1} = x_l + F(x_l), so x_L = x_l + sum F and the gradient reaching unit l
is dE/dx_l = dE/dx_L (1 + d/dx_l sum F) (Eqns. 4-5): with every F zero it is
*exactly* dE/dx_L. Constant scaling, x_{l+1} = lambda x_l + F, multiplies it by
lambda at every unit: dE/dx_l = lambda^(L-l) dE/dx_L (Eqn. 8's product),
vanishing (lambda < 1) over many units. Gating scales each shortcut by
1 - g(x), with g = sigmoid(W x + b_g) depending on x as well.

`measure` records, for every unit of a built network, the norm of its input
||x_l|| and of the loss gradient there ||dE/dx_l|| (per image: the batch
tensor's L2 norm over sqrt(batch)), in one forward and backward pass on a
batch of real images. `run` does it for the paper's networks under both
initialisations (the default, and every F zeroed with `zero_init_last`),
for each shortcut of Table 1 and each unit of Table 2, and writes a CSV and a
plot with the prediction beside the measurement. The prediction holds within
a stage, between units joined by identity (or scaled) shortcuts; a projection
shortcut (the first unit of a stage that changes width) is a 1x1 conv, which
the analysis does not predict.

    python -m keras_preact.analysis propagation --output_dir=analysis/propagation
    python -m keras_preact.analysis propagation --nets=ResNet50V2,ResNet200V2 --batch_size=4 \
        --cases=identity,constant_scaling --output_dir=analysis/imagenet

(CIFAR nets: about 3.5 minutes for ResNet-110 and 164 on a 2-core CPU, ResNet-1001
several times that.)

>>> import keras_preact, numpy as np
>>> model = keras_preact.CIFARResNetV2(14, width=4, zero_init_last=True, classifier_activation=None)
>>> images = np.random.default_rng(0).uniform(0, 255, [4, 32, 32, 3]).astype("float32")
>>> rows = predict(model, measure(model, images, np.array([0, 1, 2, 3])))
>>> [(row["unit"], row["stage_ratio"], row["predicted"]) for row in rows[:2]]
[('stage1_unit1', 1.0, 1.0), ('stage1_unit2', 1.0, 1.0)]
>>> rows[2]["unit"], rows[2]["predicted"]  # a projection: no prediction
('stage2_unit1', None)
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys

import keras
import tensorflow as tf
from absl import app, flags

import keras_preact
from keras_preact import console, data, run_dir
from keras_preact.layers import UNIT_VARIANT_FACTS, PreActBlock, PreActBottleneck
from keras_preact.models import CIFAR_DEPTHS

# Table 1's shortcuts (builder arguments), measured on the default (full pre-activation) unit.
SHORTCUT_CASES = {
    "identity": {},
    "constant_scaling": {"shortcut": "constant_scaling", "shortcut_scale": 0.5},
    "exclusive_gating": {"shortcut": "exclusive_gating", "gate_bias_init": -6.0},
    "shortcut_only_gating": {"shortcut": "shortcut_only_gating", "gate_bias_init": 0.0},
    "conv1x1": {"shortcut": "conv1x1"},
    "dropout": {"shortcut": "dropout", "shortcut_dropout_rate": 0.5},
}
# Table 2's units, with identity shortcuts.
VARIANT_CASES = {name: {"unit_variant": name} for name in UNIT_VARIANT_FACTS}
DEFAULT_NETS = ("ResNet110V2", "ResNet164V2", "ResNet1001V2")  # the paper's CIFAR nets
INITS = {"default": False, "zero": True}  # zero: every F starts at 0 (zero_init_last)
FIELDS = (
    "model",
    "case",
    "init",
    "position",
    "unit",
    "stage",
    "x_norm",
    "grad_norm",
    "stage_ratio",
    "predicted",
    "prediction",
)


def measure(model, images, labels, *, training=True):
    """Per-unit input norms and loss-gradient norms of `model` (which returns logits).

    Returns one dict per unit input x_l (in order) and one for the last unit's
    output ("output"): `position`, `unit`, `stage`, `x_norm`, `grad_norm`, and
    `stage_ratio`, the gradient norm over that at the end of the unit's stage
    (NaN when no gradient reaches the stage's end).
    """
    units = [layer for layer in model.layers if isinstance(layer, (PreActBlock, PreActBottleneck))]
    if not units:
        raise ValueError(f"{model.name} has no PreActBlock / PreActBottleneck units.")
    probe = keras.Model(
        model.inputs, [unit.input for unit in units] + [units[-1].output, model.output]
    )
    with tf.GradientTape() as tape:
        *xs, logits = probe(tf.convert_to_tensor(images), training=training)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
    grads = tape.gradient(loss, xs)
    batch = math.sqrt(len(images))
    names = [unit.name for unit in units] + ["output"]
    stages = [_stage(unit.name) for unit in units]
    stages.append(stages[-1])
    rows = []
    for position, (name, stage, x, grad) in enumerate(zip(names, stages, xs, grads)):
        rows.append(
            {
                "position": position,
                "unit": name,
                "stage": stage,
                "x_norm": float(tf.norm(x)) / batch,
                "grad_norm": float(tf.norm(grad)) / batch,
            }
        )
    for row in rows:
        end = _stage_end(rows, stages, row["position"])
        at_end = rows[end]["grad_norm"]
        row["stage_ratio"] = row["grad_norm"] / at_end if at_end else math.nan
    return rows


def predict(model, rows, shortcut="identity", shortcut_scale=None, gate_bias_init=None, **_):
    """Adds the paper's prediction of `stage_ratio` to `rows` (from `measure`) where it applies.

    With every F zero and a clean path (identity or scaled shortcuts, no BN
    or ReLU after the addition), unit l's gradient over its stage end's is
    1 (identity), lambda^(L-l) (constant scaling) or, for gating,
    about (1 - sigmoid(b_g))^(L-l) (exactly so were the gate's weights zero).
    Elsewhere `predicted` is None. Returns `rows`.
    """
    units = {layer.name: layer for layer in model.layers if hasattr(layer, "projects")}
    factor, kind = {
        "identity": (1.0, "exact"),
        "constant_scaling": (shortcut_scale if shortcut_scale is not None else 0.5, "exact"),
        "exclusive_gating": (1 - _sigmoid(gate_bias_init or 0.0), "approximate"),
        "shortcut_only_gating": (1 - _sigmoid(gate_bias_init or 0.0), "approximate"),
    }.get(shortcut, (None, None))
    stages = [row["stage"] for row in rows]
    for row in rows:
        row["predicted"], row["prediction"] = None, None
        end = _stage_end(rows, stages, row["position"])
        between = [units[r["unit"]] for r in rows[row["position"] : end]]
        clean = all(
            not unit.projects
            and not unit.variant_facts.output_norm
            and not unit.variant_facts.output_relu
            for unit in between
        )
        if factor is not None and clean:
            row["predicted"] = factor ** len(between)
            row["prediction"] = kind
    return rows


def run(
    models=DEFAULT_NETS,
    cases=None,
    *,
    output_dir,
    dataset="digits",
    data_dir=None,
    batch_size=16,
    image_size=224,
    seed=0,
    plot=True,
):
    """Measures every model x case x initialisation; writes propagation.csv (and .png).

    `cases` maps a case name to builder arguments (default: `all_cases()`). CIFAR nets see the batch at 32x32, ImageNet nets
    resized to `image_size`. Returns the rows written.
    """
    cases = cases or all_cases()
    info = data.dataset_info(dataset, data_dir)  # once: a folder reads every file's header
    images, labels = _batch(dataset, data_dir, batch_size, info)
    classes = info.num_classes
    rows = []
    for name in models:
        builder = getattr(keras_preact, name)
        cifar = name in _cifar_names()
        pixels = images if cifar else tf.image.resize(images, [image_size] * 2).numpy()
        for case, kwargs in cases.items():
            for init, zero in INITS.items():
                keras.utils.set_random_seed(seed)
                options = dict(classes=classes, classifier_activation=None, zero_init_last=zero)
                if not cifar:
                    options.update(weights=None, input_shape=pixels.shape[1:])
                model = builder(**options, **kwargs)
                measured = predict(model, measure(model, pixels, labels), **kwargs)
                rows += [dict(r, model=name, case=case, init=init) for r in measured]
    tf.io.gfile.makedirs(output_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    run_dir.atomic_write(os.path.join(output_dir, "propagation.csv"), buffer.getvalue())
    if plot:
        plot_rows(rows, os.path.join(output_dir, "propagation.png"))
    return rows


def plot_rows(rows, path):
    """One row of panels per model: gradient ratios (F = 0, then default init) and forward norms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(row["model"] for row in rows))
    panels = [("zero", "grad_norm"), ("default", "grad_norm"), ("default", "x_norm")]
    titles = {
        ("zero", "grad_norm"): "||dE/dx_l|| / ||dE/dx_L||, every F = 0",
        ("default", "grad_norm"): "||dE/dx_l|| / ||dE/dx_L||, default init",
        ("default", "x_norm"): "||x_l|| per image, default init",
    }
    fig, axes = plt.subplots(
        len(models), len(panels), figsize=(6 * len(panels), 4 * len(models)), squeeze=False
    )
    for i, model in enumerate(models):
        for j, (init, key) in enumerate(panels):
            ax = axes[i][j]
            for case in dict.fromkeys(r["case"] for r in rows if r["model"] == model):
                series = [
                    r for r in rows if (r["model"], r["case"], r["init"]) == (model, case, init)
                ]
                values = [r[key] for r in series]
                if key == "grad_norm":  # relative to the last unit's; none there: all NaN
                    values = [v / values[-1] if values[-1] else math.nan for v in values]
                values = [v if v > 0 else math.nan for v in values]  # a log axis
                (line,) = ax.plot([r["position"] for r in series], values, label=case, lw=1.2)
                if key == "grad_norm" and init == "zero":
                    _plot_prediction(ax, series, line.get_color())
            ax.set_yscale("log")
            ax.set_title(f"{model}: {titles[init, key]}", fontsize=9)
            ax.set_xlabel("unit l")
            ax.grid(alpha=0.3)
        axes[i][0].legend(fontsize=7)
    fig.suptitle("Propagation at initialisation (dashed: the paper's prediction within each stage)")
    fig.tight_layout()
    with run_dir.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _plot_prediction(ax, series, color):
    """Dashed: the prediction, anchored at each stage's measured end."""
    last = series[-1]["grad_norm"]
    if not last:
        return
    stages = [r["stage"] for r in series]
    points = [
        (r["position"], r["predicted"] * series[_stage_end(series, stages, i)]["grad_norm"] / last)
        for i, r in enumerate(series)
        if r["predicted"] is not None
    ]
    if points:
        ax.plot(*zip(*points), ls="--", lw=1, color=color)


def _stage(name):
    match = re.match(r"stage(\d+)_unit\d+$", name)
    return int(match.group(1)) if match else 0


def _stage_end(rows, stages, position):
    """The position of the output of `position`'s stage: the first input of the next stage."""
    stage = stages[position]
    end = position
    while end + 1 < len(rows) and stages[end] == stage and rows[end]["unit"] != "output":
        end += 1
    return end


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _cifar_names():
    return {f"ResNet{depth}V2" for depth in CIFAR_DEPTHS}


def _batch(dataset, data_dir, batch_size, info=None):
    """One batch of real images and labels, in evaluation order (same every time).

    `info`: the dataset's `DatasetInfo`, when the caller has it already.
    """
    info = info or data.dataset_info(dataset, data_dir)
    ds = data.make_dataset(
        dataset,
        info.eval_split,
        batch_size=batch_size,
        data_dir=data_dir,
    )
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


# ---------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def define_flags():
    """Defines the subcommand's flags on absl's FLAGS (a name another subcommand defined is shared)."""

    def define(kind, name, *arguments):
        if name not in FLAGS:
            getattr(flags, f"DEFINE_{kind}")(name, *arguments)

    define("list", "nets", list(DEFAULT_NETS), "Networks to measure (builder names).")
    define("list", "cases", [], f"Cases (default: all): {', '.join(all_cases())}.")
    define("string", "output_dir", None, "Where propagation.csv and propagation.png go.")
    define("string", "dataset", "digits", "Where the batch of real images comes from.")
    define("string", "data_dir", None, "data_dir of --dataset.")
    define("integer", "batch_size", 16, "Images in the batch.")
    define("integer", "image_size", 224, "Input size of ImageNet nets (CIFAR nets: 32).")
    define("integer", "seed", 0, "Seed of the initialisation.")
    define("boolean", "verbose", False, "Show TensorFlow's own logs too (-v for short).")


def all_cases():
    """Table 1's shortcuts (on the full pre-activation unit), then Table 2's other units."""
    variants = {k: v for k, v in VARIANT_CASES.items() if v["unit_variant"] != "full_preact"}
    return {**SHORTCUT_CASES, **variants}


def usage():
    """`--help`: what the subcommand does, then its flags."""
    return f"{__doc__}\nFlags:\n{FLAGS.module_help(__name__)}"


def main(argv):
    """Measures the flags' networks and cases; writes the CSV and the plot."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required.")
    unknown = [n for n in FLAGS.nets if not hasattr(keras_preact, n) or not n.startswith("ResNet")]
    cases = all_cases()
    unknown += [c for c in FLAGS.cases if c not in cases]
    if unknown:
        raise app.UsageError(
            f"Unknown --nets/--cases {', '.join(unknown)}: nets are builder names such as "
            f"ResNet110V2; cases are {', '.join(cases)}."
        )
    console.quiet_python_logs()
    chosen = {name: cases[name] for name in FLAGS.cases} or cases
    rows = run(
        FLAGS.nets,
        chosen,
        output_dir=FLAGS.output_dir,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size,
        seed=FLAGS.seed,
    )
    exact = [r for r in rows if r["init"] == "zero" and r["prediction"] == "exact"]
    worst = max((abs(r["stage_ratio"] / r["predicted"] - 1) for r in exact), default=0.0)
    print(
        f"{len(rows)} rows in {os.path.join(FLAGS.output_dir, 'propagation.csv')} and .png; "
        f"with every F = 0 the {len(exact)} exact predictions hold to {worst:.1e} (relative).",
        file=sys.stderr,
    )
