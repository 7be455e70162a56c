"""`python -m keras_preact.analysis cost`: parameters and multiply-adds of every named model.

    python -m keras_preact.analysis cost                    # every model and layout, at 224 and 320
    python -m keras_preact.analysis cost --models=ResNet50V2,ResNet200V2 --layouts=paper
    python -m keras_preact.analysis cost --format=csv --output=cost.csv

Each model is built (random weights, without the input-normalisation layer,
whose mean and std are constants that keras.applications keeps outside the
model) and its inference pass traced as a `tf.function` at batch 1 and the
row's input size (ImageNet nets at `--sizes`, CIFAR nets at 32). The counts
come from that model and graph, not from a formula:

* parameters: trainable (kernels, biases, BN gamma/beta, the classifier) and
  total (Keras' `count_params()`: the BN moving means and variances too);
* multiply-adds of one image: those of every convolution (`Conv2D`,
  `DepthwiseConv2dNative`: output elements x kernel height x width x input
  channels per group) and of the classifier (`MatMul`: m x n x k), read from
  the ops' shapes in the traced graph. Not counted: BN (at inference a
  multiply and an add per element), ReLU, the residual additions, pooling,
  biases, softmax, the gates' sigmoids and the scalings of Table 1's
  shortcuts. This is the ResNet papers' convention (their "FLOPs" are
  multiply-adds of the convolutions and the FC layer), and it equals TF's
  profiler's FLOPs of the Conv2D and MatMul ops, halved (checked in
  `tests/test_analysis_cost.py`).

Beside the counts stand reference figures (`REFERENCE_PARAMS`,
`REFERENCE_MULTIPLY_ADDS`, from `SPEC.md` §2) and their differences: the exact
trainable parameters of the paper's layout and timm's, all parameters of
keras.applications' ResNet50V2/101V2/152V2 for the `"keras"` layout, the
paper's rounded sizes (its Table 3), and imgclsmob's multiply-adds. The latter
are FLOPs/2 over every layer, BN, ReLU and additions included at one
operation per element, and so is TF's profiler's total (`total_float_ops / 2`,
4.10 G for ResNet-50): both sit 0.3-0.6% above the convolutions' count for the
ImageNet nets (ResNet-50: 4.09 G against 4.11 G) and about 3% above it for the
CIFAR bottleneck nets (ResNet-164: 247.6 M against 255 M), whose 16-channel
bottlenecks do little work per element.

The layouts differ in work: `"keras"` (TF-slim) strides the last unit of a
stage instead of the first of the next, so that unit's last convolutions and
the whole next unit run at the lower resolution: 0.61 G less for every
bottleneck depth (ResNet-50: 3.48 G against 4.09 G in `"paper"`, `"timm"`
and `"fb"`, which differ in BN, padding and pooling only).
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import io
import math
import os
import sys
import time

from absl import app, flags

import keras_preact
from keras_preact import console, run_dir
from keras_preact.models import CIFAR_DEPTHS, IMAGENET_DEPTHS, LAYOUTS

FLAGS = flags.FLAGS
CIFAR_SIZE = 32

# ---------------------------------------------------------------- reference figures
#
# Beside the measured counts. Exact parameters from SPEC.md §2: trainable ones (BN gamma/beta
# counted, moving statistics not) for the CIFAR nets and for the ImageNet nets in the "paper"
# layout (SPEC's "stem BN" column) and the "timm" layout (its "without stem BN" column); for the
# "keras" layout all parameters, BN moving statistics included (keras.applications'
# ResNet*V2 count_params()). The "fb" layout (fb.resnet.torch's preresnet.lua: a BN after each
# projection, none in stage 1's units) has no figure there. "paper": the rounded sizes in the
# paper's Table 3 (He et al. 2016; ResNet-110 is the original ResNet-110 of that table).
# Multiply-adds from SPEC.md §2 (imgclsmob's tables: FLOPs/2 of every layer, see the docstring),
# set beside the "paper", "timm" and "fb" layouts, which do the same convolutions.
REFERENCE_PARAMS = {  # (model, layout, classes): (parameters, "trainable" | "total", paper)
    ("ResNet20V2", "", 10): (272_282, "trainable", ""),
    ("ResNet56V2", "", 10): (855_578, "trainable", ""),
    ("ResNet110V2", "", 10): (1_730_522, "trainable", "1.7M"),
    ("ResNet164V2", "", 10): (1_703_258, "trainable", "1.7M"),
    ("ResNet164V2", "", 100): (1_726_388, "trainable", "1.7M"),
    ("ResNet1001V2", "", 10): (10_327_706, "trainable", "10.2M"),
    ("ResNet1001V2", "", 100): (10_350_836, "trainable", "10.2M"),
    **{
        (f"ResNet{depth}V2", layout, 1000): (count, kind, "")
        for depth, counts in {
            # depth: (paper layout, timm layout, keras layout's total)
            18: (11_687_848, 11_687_720, None),
            34: (21_796_008, 21_795_880, None),
            50: (25_549_480, 25_549_352, 25_613_800),
            101: (44_541_608, 44_541_480, 44_675_560),
            152: (60_185_256, 60_185_128, 60_380_648),
            200: (64_666_280, 64_666_152, None),
        }.items()
        for layout, kind, count in zip(
            ("paper", "timm", "keras"), ("trainable", "trainable", "total"), counts
        )
        if count is not None
    },
}
REFERENCE_MULTIPLY_ADDS = {  # (model, input size): multiply-adds of one image
    ("ResNet164V2", 32): 255e6,
    ("ResNet1001V2", 32): 1536e6,
    ("ResNet50V2", 224): 4.11e9,
    ("ResNet101V2", 224): 7.83e9,
    ("ResNet152V2", 224): 11.55e9,
    ("ResNet200V2", 224): 15.07e9,
    ("ResNet200V2", 320): 30.8e9,
}
REFERENCE_MULTIPLY_ADDS_LAYOUTS = ("", "paper", "timm", "fb")

# ---------------------------------------------------------------- counting


def _elements(tensor):
    shape = tensor.shape
    if not shape.is_fully_defined():
        raise ValueError(f"{tensor.name} has shape {shape}: trace with a fully known input shape.")
    return math.prod(shape.as_list())


def _conv(op):  # kernel [kh, kw, in channels per group, out channels]
    kh, kw, cin, _ = op.inputs[1].shape.as_list()
    return _elements(op.outputs[0]) * kh * kw * cin


def _depthwise(op):  # kernel [kh, kw, in channels, multiplier]
    kh, kw, _, _ = op.inputs[1].shape.as_list()
    return _elements(op.outputs[0]) * kh * kw


def _matmul(op):
    a = op.inputs[0].shape.as_list()
    return _elements(op.outputs[0]) * (a[0] if op.get_attr("transpose_a") else a[1])


def _batch_matmul(op):
    a = op.inputs[0].shape.as_list()
    return _elements(op.outputs[0]) * (a[-2] if op.get_attr("adj_x") else a[-1])


# Op type -> its multiply-adds, from the op's real shapes.
COUNTED_OPS = {
    "Conv2D": _conv,
    "DepthwiseConv2dNative": _depthwise,
    "MatMul": _matmul,
    "BatchMatMulV2": _batch_matmul,
    "BatchMatMulV3": _batch_matmul,
}
# Ops with multiply-adds this counter does not count or cannot see into: it refuses them
# rather than give a short count.
REFUSED_OPS = (
    "Conv3D",
    "Conv2DBackpropInput",
    "Einsum",
    "BatchMatMul",
    "_FusedConv2D",
    "_FusedMatMul",
    "PartitionedCall",
    "StatefulPartitionedCall",
    "While",
    "StatelessWhile",
    "If",
    "StatelessIf",
)


def graph_multiply_adds(graph):
    """Multiply-adds of the convolutions and matrix products of a traced `tf.Graph`, by op type.

    Raises `ValueError` for a shape that is not fully known or an op it cannot
    count (`REFUSED_OPS`: function calls, loops, other convolutions).

    >>> import tensorflow as tf
    >>> matmul = tf.function(lambda x, w: tf.matmul(x, w))
    >>> graph = matmul.get_concrete_function(tf.TensorSpec([2, 3]), tf.TensorSpec([3, 4])).graph
    >>> graph_multiply_adds(graph)  # 2 x 4 outputs, 3 multiply-adds each
    {'MatMul': 24}
    """
    counts = {}
    for op in graph.get_operations():
        if op.type in REFUSED_OPS:
            raise ValueError(f"Cannot count the multiply-adds of {op.type} op {op.name!r}.")
        if op.type in COUNTED_OPS:
            counts[op.type] = counts.get(op.type, 0) + COUNTED_OPS[op.type](op)
    return counts


def traced_graph(model, input_shape):
    """The graph of `model`'s inference pass on one input of `input_shape` (no batch axis)."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), autograph=False)
    return forward.get_concrete_function(tf.TensorSpec([1, *input_shape], tf.float32)).graph


def multiply_adds(model, input_shape):
    """Multiply-adds of `model`'s inference pass on one input of `input_shape` (no batch axis).

    The convolutions' and matrix products' (see the module docstring), counted
    in the traced graph.

    >>> import keras
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(4, 3, padding="same"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(5),
    ... ])
    >>> multiply_adds(model, (8, 8, 3))  # 8 x 8 x 4 outputs x 3 x 3 x 3, then 4 x 5
    6932
    """
    return sum(graph_multiply_adds(traced_graph(model, input_shape)).values())


def parameters(model):
    """`(trainable, total)` parameter counts of a built Keras model.

    >>> import keras
    >>> parameters(keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()]))
    (6, 12)
    """
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return int(trainable), int(model.count_params())


# ---------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Row:
    """One model at one input size, measured, with its reference figures (empty: none)."""

    model: str
    layout: str  # "" for the CIFAR nets
    classes: int
    input_size: int
    trainable_params: int
    total_params: int
    multiply_adds: int

    @property
    def reference(self):
        """`(parameters, "trainable" | "total", paper's size, multiply-adds)`; None where none."""
        params, counted, paper = REFERENCE_PARAMS.get(
            (self.model, self.layout, self.classes), (None, "", "")
        )
        macs = None
        if self.layout in REFERENCE_MULTIPLY_ADDS_LAYOUTS:
            macs = REFERENCE_MULTIPLY_ADDS.get((self.model, self.input_size))
        return params, counted, paper, macs

    @property
    def params_difference(self):
        """Measured minus reference parameters (of the kind the reference counts), or None."""
        params, counted, _, _ = self.reference
        if params is None:
            return None
        return (self.trainable_params if counted == "trainable" else self.total_params) - params

    @property
    def multiply_adds_difference(self):
        """Measured over reference multiply-adds, minus 1 (a fraction), or None."""
        macs = self.reference[3]
        return None if macs is None else self.multiply_adds / macs - 1


def named_models():
    """Every named builder: the CIFAR nets, then the ImageNet nets.

    >>> named_models()[:2], named_models()[-1]
    (('ResNet20V2', 'ResNet32V2'), 'ResNet200V2')
    """
    return tuple(f"ResNet{depth}V2" for depth in (*CIFAR_DEPTHS, *IMAGENET_DEPTHS))


def _is_cifar(name):
    return int(name[len("ResNet") : -len("V2")]) in CIFAR_DEPTHS


def check_arguments(models, layouts, sizes, cifar_classes):
    """Raises `ValueError` naming what is wrong with `cost_table`'s arguments."""
    for kind, values, allowed in (("model", models, named_models()), ("layout", layouts, LAYOUTS)):
        unknown = [value for value in values if value not in allowed]
        if unknown:
            raise ValueError(
                f"Unknown {kind}{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}. "
                f"Allowed values: {', '.join(allowed)}."
            )
    if any(not isinstance(size, int) or size < 32 for size in sizes):
        raise ValueError(f"Input sizes must be integers >= 32, not {list(sizes)}.")
    if any(not isinstance(classes, int) or classes < 1 for classes in cifar_classes):
        raise ValueError(f"Class counts must be positive integers, not {list(cifar_classes)}.")


def cost_table(models=None, layouts=None, sizes=(224, 320), cifar_classes=(10,), progress=None):
    """Builds each model once per layout (and class count), traces it at each size: the rows.

    Args:
        models: builder names (default: `named_models()`).
        layouts: the ImageNet nets' layouts (default: all of `keras_preact.LAYOUTS`).
        sizes: the ImageNet nets' input sizes; CIFAR nets run at 32.
        cifar_classes: the CIFAR nets' class counts (ImageNet nets have 1000).
        progress: called with one line of text per built model.

    Returns:
        `Row`s by model, then input size, then layout (or class count).

    >>> [row.multiply_adds for row in cost_table(["ResNet20V2"])]
    [40813184]
    """
    models = named_models() if models is None else tuple(models)
    layouts = tuple(LAYOUTS) if layouts is None else tuple(layouts)
    check_arguments(models, layouts, sizes, cifar_classes)
    rows = []
    for name in models:
        builder = getattr(keras_preact, name)
        if _is_cifar(name):
            builds = [
                (("", classes), {"classes": classes}, (CIFAR_SIZE,)) for classes in cifar_classes
            ]
        else:
            builds = [((layout, 1000), {"layout": layout}, tuple(sizes)) for layout in layouts]
        measured = []
        for (layout, classes), kwargs, model_sizes in builds:
            start = time.perf_counter()
            model = builder(include_preprocessing=False, **kwargs)
            params = parameters(model)
            macs = [multiply_adds(model, (size, size, 3)) for size in model_sizes]
            del model
            gc.collect()
            for size, count in zip(model_sizes, macs):
                measured.append(Row(name, layout, classes, size, *params, count))
            if progress:
                work = ", ".join(
                    f"{_si(count)} at {size}" for size, count in zip(model_sizes, macs)
                )
                progress(
                    f"{name} ({layout or f'{classes} classes'}): {params[0]:,} trainable "
                    f"parameters, {work} ({time.perf_counter() - start:.1f} s)"
                )
        # Same-size rows side by side: the layouts' work compares at a glance.
        rows += sorted(measured, key=lambda row: row.input_size)
    return rows


# ---------------------------------------------------------------- output

COLUMNS = (
    "model",
    "layout",
    "classes",
    "input",
    "trainable params",
    "total params",
    "multiply-adds",
    "reference params",
    "Δ params",
    "paper",
    "reference multiply-adds",
    "Δ multiply-adds",
)
CSV_COLUMNS = (
    "model",
    "layout",
    "classes",
    "input_size",
    "trainable_params",
    "total_params",
    "multiply_adds",
    "reference_params",
    "reference_params_counted",
    "params_difference",
    "paper_params",
    "reference_multiply_adds",
    "multiply_adds_difference_percent",
)


def _si(count):
    return f"{count / 1e9:.3f} G" if count >= 1e9 else f"{count / 1e6:.1f} M"


def _si_reference(count):
    return f"{count / 1e9:g} G" if count >= 1e9 else f"{count / 1e6:g} M"


def _difference(count):
    return "" if count is None else "0" if count == 0 else f"{count:+,}"


def format_markdown(rows):
    """The rows as a markdown table (a header, then one line per row).

    >>> row = Row("ResNet50V2", "keras", 1000, 224, 25_568_360, 25_613_800, 3_482_255_360)
    >>> print(format_markdown([row]).splitlines()[-1])
    | ResNet50V2 | keras | 1000 | 224 | 25,568,360 | 25,613,800 | 3.482 G | 25,613,800 (all) | 0 |  |  |  |
    """
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 else "--:" for i in range(len(COLUMNS))) + "|",
    ]
    for row in rows:
        params, counted, paper, macs = row.reference
        params_difference = row.params_difference
        macs_difference = row.multiply_adds_difference
        cells = [
            row.model,
            row.layout or "—",
            str(row.classes),
            str(row.input_size),
            f"{row.trainable_params:,}",
            f"{row.total_params:,}",
            _si(row.multiply_adds),
            "" if params is None else f"{params:,}" + (" (all)" if counted == "total" else ""),
            _difference(params_difference),
            paper,
            "" if macs is None else _si_reference(macs),
            "" if macs_difference is None else f"{100 * macs_difference:+.1f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows):
    """The rows as CSV with a header (`CSV_COLUMNS`); counts as plain integers, empty: no figure.

    >>> row = Row("ResNet20V2", "", 10, 32, 272_282, 273_658, 40_813_184)
    >>> print(format_csv([row]).splitlines()[1])
    ResNet20V2,,10,32,272282,273658,40813184,272282,trainable,0,,,
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        params, counted, paper, macs = row.reference
        macs_difference = row.multiply_adds_difference
        writer.writerow(
            [
                row.model,
                row.layout,
                row.classes,
                row.input_size,
                row.trainable_params,
                row.total_params,
                row.multiply_adds,
                "" if params is None else params,
                counted,
                "" if params is None else row.params_difference,
                paper,
                "" if macs is None else int(macs),
                "" if macs_difference is None else f"{100 * macs_difference:.2f}",
            ]
        )
    return out.getvalue()


FORMATS = {"markdown": format_markdown, "csv": format_csv}

# ---------------------------------------------------------------- command line


def define_flags():
    """Defines the subcommand's flags on absl's FLAGS (a name another subcommand defined is shared)."""

    def define(kind, name, *arguments):
        if name not in FLAGS:
            getattr(flags, f"DEFINE_{kind}")(name, *arguments)

    define("list", "models", [], f"Builder names (default: all: {', '.join(named_models())}).")
    define("list", "layouts", list(LAYOUTS), "Layouts of the ImageNet nets.")
    define("list", "sizes", ["224", "320"], "Input sizes of the ImageNet nets (CIFAR nets: 32).")
    define("list", "cifar_classes", ["10"], "Class counts of the CIFAR nets (ImageNet: 1000).")
    define("enum", "format", "markdown", list(FORMATS), "Table format.")
    define("string", "output", None, "Write the table to this file (atomically), not stdout.")
    define("boolean", "verbose", False, "Show TensorFlow's own logs too (-v for short).")


def usage():
    """`--help`: what the subcommand does, then its flags."""
    return f"{__doc__}\nFlags:\n{FLAGS.module_help(__name__)}"


def _integers(values, flag):
    try:
        return tuple(int(value) for value in values)
    except ValueError:
        raise app.UsageError(f"--{flag} takes integers, not {','.join(values)!r}.") from None


def main(argv):
    """Measures the flags' models and prints (or writes) the table."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    models = FLAGS.models or None
    sizes = _integers(FLAGS.sizes, "sizes")
    cifar_classes = _integers(FLAGS.cifar_classes, "cifar_classes")
    try:
        check_arguments(models or (), FLAGS.layouts, sizes, cifar_classes)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    console.quiet_python_logs()
    rows = cost_table(
        models,
        FLAGS.layouts,
        sizes,
        cifar_classes,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    text = FORMATS[FLAGS.format](rows)
    if FLAGS.output:
        import tensorflow as tf

        if os.path.dirname(FLAGS.output):
            tf.io.gfile.makedirs(os.path.dirname(FLAGS.output))
        run_dir.atomic_write(FLAGS.output, text)
        print(f"Wrote the table to {FLAGS.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
