"""ImageNet pre-activation ResNets: ResNet18V2 ... ResNet200V2 in three layouts.

A depth table states each architecture (as fb.resnet.torch's preresnet.lua),
and a `Layout` states how the public implementations differ:

* `"paper"` (default): the paper's full pre-activation ResNet (its appendix):
  7x7/2 conv -> BN -> ReLU -> 3x3/2 max-pool, every unit pre-activated, the
  shared BN-ReLU feeding 1x1 projections, stride on the 3x3 conv of the first
  unit of stages 2-4, ImageNet mean/std inputs. fb.resnet.torch's
  `preresnet.lua` (where the public ResNet-200 weights come from) differs:
  its stage-1 units have no pre-activation, and its projections are conv + BN
  on the raw input; a converter for those weights needs a layout of its own.
* `"timm"`: timm's `resnetv2_*`: no stem BN, PyTorch's symmetric padding and
  -inf max-pool padding, so converted timm weights give the same numbers;
  inputs in [-1, 1].
* `"keras"`: keras.applications' ResNet50V2/101V2/152V2 (TF-slim): stride on
  the 3x3 of the last unit of stages 1-3 with a subsampling shortcut, biases on
  the stem conv, projections and last convs, BN epsilon 1.001e-5; inputs in
  [-1, 1].
* `"fb"`: fb.resnet.torch's `preresnet.lua`, the code of the public ResNet-200
  weights: the stem's BN-ReLU feeds stage 1, whose units have no pre-activation
  of their own (`'first'`); a projection is a strided 1x1 conv followed by a BN
  on the unit's raw input; PyTorch-style symmetric padding and -inf max-pool
  padding; ImageNet mean/std inputs.

`layout=None` (the default) takes the layout of the weights (`"timm"` for
`weights="timm:..."`, the file's own for a foreign checkpoint) and `"paper"`
when there are none.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_preact.layers import SymmetricMaxPooling2D, he_normal_fan_out
from keras_preact.models import common

# depth -> (unit, units per stage)
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


@dataclasses.dataclass(frozen=True)
class Layout:
    """The switches in which public ResNet-v2 implementations differ."""

    name: str
    stem_norm: bool  # BN-ReLU after the stem conv
    padding: str  # "same" (TF) or "symmetric" (PyTorch / TF-slim explicit padding)
    pool_padding: str  # "same", "-inf" (PyTorch) or "zeros" (ZeroPadding2D + valid)
    stride_on_last_unit: bool  # TF-slim puts a stage's stride on the previous stage's last unit
    conv_bias: bool  # biases on the stem conv, projections and last convs of F
    norm_epsilon: float
    norm_momentum: float
    normalization: str  # key of keras_preact.preprocessing.NORMALIZATIONS
    stage1_preact: bool = True  # False: stage-1 units skip their BN-ReLU (fb's 'first' units)
    raw_projection: bool = False  # projections: conv + BN on the raw input (fb.resnet.torch)


LAYOUTS = {
    "paper": Layout("paper", True, "same", "same", False, False, 1e-5, 0.9, "torch"),
    "timm": Layout("timm", False, "symmetric", "-inf", False, False, 1e-5, 0.9, "tf"),
    "keras": Layout("keras", False, "symmetric", "zeros", True, True, 1.001e-5, 0.99, "tf"),
    "fb": Layout("fb", True, "symmetric", "-inf", False, False, 1e-5, 0.9, "torch", False, True),
}


def get_layout(layout):
    if isinstance(layout, Layout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(
            f"Unknown layout {layout!r}. Allowed values: {', '.join(map(repr, LAYOUTS))}."
        )
    return LAYOUTS[layout]


def _stem(x, layout, norm_momentum):
    symmetric = layout.padding == "symmetric"
    if symmetric:
        x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)
    x = keras.layers.Conv2D(
        64,
        7,
        strides=2,
        padding="valid" if symmetric else "same",
        use_bias=layout.conv_bias,
        kernel_initializer=he_normal_fan_out(),
        name="stem_conv",
    )(x)
    if layout.stem_norm:
        x = keras.layers.BatchNormalization(
            epsilon=layout.norm_epsilon, momentum=norm_momentum, name="stem_bn"
        )(x)
        x = keras.layers.Activation("relu", name="stem_relu")(x)
    if layout.pool_padding == "-inf":
        return SymmetricMaxPooling2D(3, 2, 1, name="stem_pool")(x)
    if layout.pool_padding == "zeros":
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        return keras.layers.MaxPooling2D(3, 2, name="stem_pool")(x)
    return keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)


def ImageNetResNetV2(
    depth,
    *,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    layout=None,
    unit_variant="full_preact",
    shortcut="identity",
    drop_path_rate=0.0,
    zero_init_last=False,
    norm_momentum=None,
    seed=None,
    name=None,
    **unit_options,
):
    """Builds an ImageNet pre-activation ResNet (18, 34, 50, 101, 152 or 200 layers).

    Args:
        depth: one of 18, 34 (basic units), 50, 101, 152, 200 (bottlenecks).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation: as in keras.applications. `weights` is `None`,
            `"imagenet"` (this depth's default public checkpoint,
            `keras_preact.weights.DEFAULT_SOURCES`), a named source such as
            `"timm:resnetv2_50.a1h_in1k"`, `"keras:resnet50v2"` or
            `"fb:resnet-200"` (`keras_preact.weights.sources()`), a foreign
            checkpoint file (timm `.safetensors`/`.pth`, keras.applications
            `.h5`, fb.resnet.torch `.t7`), or a `.weights.h5` / `.keras` file.
            Downloads are cached in Keras' cache (`KERAS_HOME`);
            `KERAS_PREACT_WEIGHTS_MIRROR` replaces the publishers' URLs. With
            `include_top=False` or `classes != 1000` the backbone is loaded
            and the classifier skipped (fine-tuning).
            `input_shape` defaults to `(None, None, 3)`: any size >= 32, so
            the 224 and 320 test crops run on one model.
        include_preprocessing: the model takes raw RGB in [0, 255] and applies
            its layout's normalisation (ImageNet mean/std for `"paper"` and
            `"fb"`, [-1, 1] for `"timm"` and `"keras"`); with a named source the
            layer also records the source's evaluation protocol
            (`keras_preact.preprocessing.eval_preprocessing(model)`).
        layout: `"paper"`, `"timm"`, `"keras"` or `"fb"` (see the module
            docstring); `None` follows the weights (else `"paper"`). An explicit
            layout that the weights cannot fill is an error.
        unit_variant, shortcut, drop_path_rate, zero_init_last, **unit_options:
            passed to every unit (see `PreActBlock`).
        norm_momentum: BatchNormalization momentum (the layout's by default).

    Example:

    >>> model = ImageNetResNetV2(50, layout="timm")
    >>> model.count_params()
    25549352
    >>> model = ImageNetResNetV2(200, weights="imagenet")  # doctest: +SKIP
    """
    if depth not in IMAGENET_DEPTHS:
        raise ValueError(
            f"Invalid ImageNet depth {depth!r}. Allowed values: "
            f"{', '.join(map(str, IMAGENET_DEPTHS))} (CIFAR depths: use CIFARResNetV2)."
        )
    if layout is not None:
        layout = get_layout(layout)
    unit, stage_units = IMAGENET_DEPTHS[depth]
    common.validate_unit_variant(unit_variant, shortcut)
    common.check_head_args(include_top, pooling, classes)
    from keras_preact.weights import resolve

    resolved = resolve(weights, depth=depth, layout=layout)
    if resolved is not None and resolved.kind != "native":
        if unit_variant != "full_preact" or shortcut != "identity":
            raise ValueError(
                f"weights={weights!r} are full pre-activation units with identity shortcuts; "
                f"unit_variant={unit_variant!r} / shortcut={shortcut!r} cannot take them."
            )
    layout = layout or get_layout((resolved and resolved.layout) or "paper")
    kwargs = common.unit_kwargs(unit_options, unit_variant, shortcut)
    momentum = layout.norm_momentum if norm_momentum is None else norm_momentum
    inputs, x = common.model_input(
        input_tensor,
        input_shape,
        default_shape=(None, None, 3),
        min_size=32,
        needs_rgb=True,
    )
    x = common.maybe_preprocess(
        x,
        include_preprocessing,
        layout.normalization,
        eval_preprocessing=resolved and resolved.eval_preprocessing,
    )
    x = _stem(x, layout, momentum)
    x = common.add_stages(
        x,
        unit,
        stage_widths=STAGE_WIDTHS,
        stage_units=stage_units,
        stage_strides=STAGE_STRIDES,
        stride_on_last_unit=layout.stride_on_last_unit,
        first_stage_preact=layout.stage1_preact,
        raw_projection=layout.raw_projection,
        drop_path_rate=drop_path_rate,
        zero_init_last=zero_init_last,
        padding=layout.padding,
        output_bias=layout.conv_bias,
        norm_epsilon=layout.norm_epsilon,
        norm_momentum=momentum,
        seed=seed,
        **kwargs,
    )
    x = common.add_head(
        x,
        final_norm=unit_variant in ("relu_before_addition", "relu_only_preact", "full_preact"),
        include_top=include_top,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        norm_epsilon=layout.norm_epsilon,
        norm_momentum=momentum,
    )
    return common.finish(inputs, x, name or f"resnet{depth}v2", weights, resolved)


def _named(depth):
    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=f"resnet{depth}v2",
        **kwargs,
    ):
        return ImageNetResNetV2(
            depth,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name,
            **kwargs,
        )

    unit, stages = IMAGENET_DEPTHS[depth]
    builder.__name__ = f"ResNet{depth}V2"
    builder.__qualname__ = builder.__name__
    builder.__doc__ = (
        f"Pre-activation ResNet-{depth} for ImageNet ({unit} units {list(stages)}).\n\n"
        "Same arguments as `ImageNetResNetV2` (depth fixed); `layout='paper'` by default.\n\n"
        f"Example:\n\n>>> model = ResNet{depth}V2(weights=None, layout='timm')\n"
    )
    return builder


ResNet18V2 = _named(18)
ResNet34V2 = _named(34)
ResNet50V2 = _named(50)
ResNet101V2 = _named(101)
ResNet152V2 = _named(152)
ResNet200V2 = _named(200)
