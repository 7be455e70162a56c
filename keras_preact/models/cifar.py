"""CIFAR pre-activation ResNets (the paper's Sec. 4 and Tables 1-3).

A 3x3, 16-channel stem conv, three stages at 32x32, 16x16 and 8x8 (stride 2
on the first unit of stages 2 and 3), a final BN-ReLU, global pooling and the
classifier. Depth is `6n + 2` with basic units, `9n + 2` with bottlenecks and
`3n + 2` with the paper's 1-layer units.
"""

from __future__ import annotations

import keras

from keras_preact import preprocessing
from keras_preact.layers import he_normal_fan_out
from keras_preact.models import common
from keras_preact.models.base import ResNetV2
from keras_preact.normalization import FusedBatchNormalization
from keras_preact.options import check_choice

# Named CIFAR nets: depth -> unit type (as fb.resnet.torch's resnet-pre-act.lua).
CIFAR_DEPTHS = {
    20: "basic",
    32: "basic",
    44: "basic",
    56: "basic",
    110: "basic",
    164: "bottleneck",
    1001: "bottleneck",
}


def cifar_units_per_stage(depth, unit):
    """Units per stage for a CIFAR net: depth = 3 * convs_per_unit * n + 2.

    >>> cifar_units_per_stage(164, "bottleneck")
    18
    """
    check_choice("unit", unit, tuple(common.CONVS_PER_UNIT))
    per_unit = common.CONVS_PER_UNIT[unit]
    step = 3 * per_unit
    if not isinstance(depth, int) or depth < step + 2 or (depth - 2) % step:
        examples = ", ".join(str(step * n + 2) for n in (1, 2, 3, 18))
        raise ValueError(
            f"Invalid depth {depth!r} for {unit!r} units: CIFAR depth must be {step}n+2 "
            f"with n >= 1 (e.g. {examples})."
        )
    return (depth - 2) // step


@keras.saving.register_keras_serializable(package="keras_preact")
class CIFARResNetV2(ResNetV2):
    """A CIFAR pre-activation ResNet of any valid depth.

    Args:
        depth: total weighted layers: `6n+2` (basic), `9n+2` (bottleneck) or
            `3n+2` (one_layer).
        unit: `"basic"`, `"bottleneck"` or `"one_layer"` (the paper's 1-layer
            units); defaults to the paper's choice for named depths (bottleneck
            for 164 and 1001, basic otherwise).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation: as in keras.applications. `input_shape`
            defaults to `(32, 32, 3)`; `(None, None, 3)` accepts any size >= 8.
            `weights` is `None` or a `.weights.h5` / `.keras` file of this net
            (the public checkpoints are ImageNet nets).
        include_preprocessing: the model takes raw RGB in [0, 255] and
            normalises inside with `normalization`.
        normalization: a name in `keras_preact.preprocessing.NORMALIZATIONS`
            (`"cifar10"`, `"cifar100"`, ...) or a `(mean, std)` pair.
        width: channels of the stem and first stage (16 in the paper); stages
            use width, 2x width and 4x width (x4 outputs for bottlenecks).
        unit_variant, shortcut, shortcut_scale, residual_scale, gate_bias_init,
        shortcut_dropout_rate, drop_path_rate, zero_init_last: passed to every
            unit (see `PreActBlock`; `drop_path_rate` grows linearly to the
            last unit). Units without a leading BN follow a conv-BN-ReLU stem
            (ResNet-v1).
        norm_momentum: BatchNormalization momentum.
        seed: seed of the units' stochastic depth and shortcut dropout.
        remat: recompute each unit's activations in the backward pass instead of
            keeping them (`PreActBlock`'s `remat`): about a third of the training
            memory of deep nets for about a third more step time.
        eval_protocol: how the model is evaluated (an `EvalProtocol` or its
            dict; the paper's by default): `model.eval_protocol`.
        name: the model's name (`"resnet{depth}v2"`, plus `"_{unit}"` for a
            unit other than the named depth's).

    The model's `get_config()` holds all of these but `weights` and
    `input_tensor`, with `stage_units` and `stage_widths`.

    Example:

    >>> model = CIFARResNetV2(164, classes=100)
    >>> sum(w.numpy().size for w in model.trainable_weights)  # the paper's 1.7M
    1726388
    >>> model.get_config()["stage_units"], model.get_config()["stage_widths"]
    ([18, 18, 18], [16, 32, 64])
    >>> table2_row = CIFARResNetV2(110, unit_variant="relu_before_addition")
    >>> table2_row.get_layer("stage3_unit18").unit_variant
    'relu_before_addition'
    """

    def __init__(
        self,
        depth,
        unit=None,
        *,
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=10,
        classifier_activation="softmax",
        include_preprocessing=True,
        normalization="cifar10",
        width=16,
        unit_variant="full_preact",
        shortcut="identity",
        shortcut_scale=None,
        residual_scale=None,
        gate_bias_init=None,
        shortcut_dropout_rate=None,
        drop_path_rate=0.0,
        zero_init_last=False,
        norm_momentum=0.9,
        seed=None,
        remat=False,
        eval_protocol=None,
        name=None,
        trainable=True,
    ):
        common.check_cifar_weights(weights)
        unit = unit or CIFAR_DEPTHS.get(depth, "basic")
        units = cifar_units_per_stage(depth, unit)
        options = common.UnitOptions.of(
            unit_variant,
            (shortcut, shortcut_scale, residual_scale, gate_bias_init, shortcut_dropout_rate),
            (drop_path_rate, zero_init_last, norm_momentum, seed, remat),
        )
        head = common.HeadOptions(include_top, pooling, classes, classifier_activation)
        inputs, x = common.model_input(input_tensor, input_shape, (32, 32, 3), min_size=8)
        x, include_preprocessing = common.preprocess(x, include_preprocessing, normalization)
        widths = (width, 2 * width, 4 * width)
        outputs = _network(x, unit, (units,) * 3, widths, options, head)
        config = {
            "depth": depth,
            "unit": unit,
            "stage_units": (units,) * 3,
            "stage_widths": widths,
            "width": width,
            "normalization": preprocessing.normalization_config(normalization),
            **common.model_config(inputs, include_preprocessing, head, options, eval_protocol),
        }
        if name is None:
            name = f"resnet{depth}v2" + ("" if unit == CIFAR_DEPTHS.get(depth) else f"_{unit}")
        self._init_functional(inputs, outputs, name, config, weights, trainable=trainable)

    @property
    def normalization(self):
        """How the net's inputs are normalised: a name in `NORMALIZATIONS` or `(mean, std)`."""
        return self._preact_config["normalization"]


def _network(x, unit, stage_units, widths, options, head):
    """The 3x3 stem conv, three stages at strides 1, 2, 2, and the head. Units without a
    leading BN follow a conv-BN-ReLU stem (ResNet-v1)."""
    x = keras.layers.Conv2D(
        widths[0],
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=he_normal_fan_out(),
        name="stem_conv",
    )(x)
    if not options.facts.preact_norm:
        x = FusedBatchNormalization(momentum=options.norm_momentum, name="stem_bn")(x)
        x = keras.layers.Activation("relu", name="stem_relu")(x)
    places = common.plan_units(
        stage_units, (1, 2, 2), stride_on_last_unit=False, output_stride=None, stem_stride=1
    )
    x, _ = common.add_stages(x, unit, widths, places, options)
    return common.add_head(
        x,
        head,
        final_norm=options.facts.final_norm,
        norm_epsilon=1e-5,
        norm_momentum=options.norm_momentum,
    )


def _named(depth):
    def builder(*args, **kwargs):
        arguments = common.bind(builder, args, kwargs)
        return CIFARResNetV2(depth, CIFAR_DEPTHS[depth], **arguments)

    unit = CIFAR_DEPTHS[depth]
    per_stage = cifar_units_per_stage(depth, unit)
    skip = "  # doctest: +SKIP" if depth > 200 else ""  # ResNet-1001 builds in seconds
    doc = f"""Pre-activation ResNet-{depth} for CIFAR: {unit} units, {per_stage} per stage.

    `CIFARResNetV2({depth}, "{unit}", ...)`: the same arguments but `depth` and
    `unit` (see its docstring); keras.applications' (`include_top` ...
    `classifier_activation`) may also be passed positionally, in its order.
    `unit_variant`, `shortcut` and the shortcut options choose the paper's
    units (see `PreActBlock`).

    Example:

    >>> model = ResNet{depth}V2(classes=100){skip}
    >>> model.output_shape{skip}
    (None, 100)
    """
    return common.named_builder(builder, CIFARResNetV2, ("depth", "unit"), f"ResNet{depth}V2", doc)


ResNet20V2 = _named(20)
ResNet32V2 = _named(32)
ResNet44V2 = _named(44)
ResNet56V2 = _named(56)
ResNet110V2 = _named(110)
ResNet164V2 = _named(164)
ResNet1001V2 = _named(1001)
