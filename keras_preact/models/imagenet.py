"""ImageNet pre-activation ResNets: ResNet18V2 ... ResNet200V2 in six layouts.

A depth table states each architecture (as fb.resnet.torch's preresnet.lua),
and a `Layout` states how the public implementations differ:

* `"paper"` (default): the paper's full pre-activation ResNet (its appendix):
  7x7/2 conv -> BN -> ReLU -> 3x3/2 max-pool, every unit pre-activated, the
  shared BN-ReLU feeding 1x1 projections, stride on the 3x3 conv of the first
  unit of stages 2-4, ImageNet mean/std inputs; strided convolutions and the
  max-pool pad symmetrically (k//2 on every side), as the authors' Torch code
  does. (It used TensorFlow's `"same"` before, which pads 0 before and 1
  after on even sizes: weights saved then load unchanged and give slightly
  different numbers; a saved `.keras` model keeps the padding it was built
  with.) fb.resnet.torch's
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
* `"bit"`: timm's BiT (`resnetv2_*_bit`, Big Transfer): the timm layout with
  weight-standardised convolutions, GroupNorm(32) and a zero-padded max-pool,
  any `width_multiplier`.
* `"timm_d"`: timm's 'd' nets (`resnetv2_18d`, `34d`, `50d_gn`, `50d_evos`): a
  deep 3x3 stem (32-32-64) and projections that average-pool (2x2) before
  their 1x1 conv; the norm (BatchNorm, GroupNorm, EvoNorm-S0) is `norm`'s.
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

from keras_preact.layers import (
    CONVS,
    StandardizedConv2D,
    SymmetricMaxPooling2D,
    he_normal_fan_out,
)
from keras_preact.models import common
from keras_preact.models.base import ResNetV2
from keras_preact.normalization import NORMS
from keras_preact.options import check_choice
from keras_preact.weights import resolve

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
OUTPUT_STRIDES = (None, 8, 16, 32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    """The switches in which public ResNet-v2 implementations differ."""

    name: str
    stem_norm: bool  # a norm-ReLU after the 7x7 stem conv
    padding: str  # "same" (TF) or "symmetric" (PyTorch / TF-slim explicit padding)
    pool_padding: str  # "same", "-inf" (PyTorch) or "zeros" (ZeroPadding2D + valid)
    stride_on_last_unit: bool  # TF-slim puts a stage's stride on the previous stage's last unit
    conv_bias: bool  # biases on the stem conv, projections and last convs of F
    norm_epsilon: float
    norm_momentum: float
    normalization: str  # key of keras_preact.preprocessing.NORMALIZATIONS
    stage1_preact: bool = True  # False: stage-1 units skip their BN-ReLU (fb's 'first' units)
    raw_projection: bool = False  # projections: conv + BN on the raw input (fb.resnet.torch)
    stem: str = "7x7"  # "7x7", or "deep": three 3x3 convs, 32-32-64 (timm's 'd' nets)
    avg_down: bool = False  # projections average-pool, then a 1x1 conv (timm's 'd' nets)
    conv: str = "plain"  # or "standardized": weight-standardised convolutions (BiT)
    norm: str = "batch"  # the default norm: "batch", "group" (32 groups) or "evonorm_s0"

    def __post_init__(self):
        check_choice("padding", self.padding, ("same", "symmetric"))
        check_choice("pool_padding", self.pool_padding, ("same", "-inf", "zeros"))
        check_choice("stem", self.stem, ("7x7", "deep"))
        check_choice("conv", self.conv, CONVS)
        check_choice("norm", self.norm, NORMS)
        if self.stem == "deep" and self.stem_norm:
            raise ValueError("stem='deep' has its own norms: it takes stem_norm=False.")


LAYOUTS = {
    "paper": Layout(
        name="paper",
        stem_norm=True,
        padding="symmetric",  # as the authors' Torch code; TF's "same" pads 0 / 1 when strided
        pool_padding="zeros",  # after the stem's ReLU, zero padding equals -inf padding
        stride_on_last_unit=False,
        conv_bias=False,
        norm_epsilon=1e-5,
        norm_momentum=0.9,
        normalization="torch",
    ),
    "timm": Layout(
        name="timm",
        stem_norm=False,
        padding="symmetric",
        pool_padding="-inf",
        stride_on_last_unit=False,
        conv_bias=False,
        norm_epsilon=1e-5,
        norm_momentum=0.9,
        normalization="tf",
    ),
    "keras": Layout(
        name="keras",
        stem_norm=False,
        padding="symmetric",
        pool_padding="zeros",
        stride_on_last_unit=True,
        conv_bias=True,
        norm_epsilon=1.001e-5,
        norm_momentum=0.99,
        normalization="tf",
    ),
    "fb": Layout(
        name="fb",
        stem_norm=True,
        padding="symmetric",
        pool_padding="-inf",
        stride_on_last_unit=False,
        conv_bias=False,
        norm_epsilon=1e-5,
        norm_momentum=0.9,
        normalization="torch",
        stage1_preact=False,
        raw_projection=True,
    ),
    "bit": Layout(  # timm's resnetv2_*_bit: Big Transfer (Kolesnikov et al. 2020)
        name="bit",
        stem_norm=False,
        padding="symmetric",
        pool_padding="zeros",  # ConstantPad2d(1, 0) + MaxPool2d(3, 2) on the raw stem conv
        stride_on_last_unit=False,
        conv_bias=False,
        norm_epsilon=1e-5,
        norm_momentum=0.9,
        normalization="tf",
        conv="standardized",
        norm="group",
    ),
    "timm_d": Layout(  # timm's resnetv2_18d, 34d, 50d_gn, 50d_evos (norm from the weights)
        name="timm_d",
        stem_norm=False,
        padding="symmetric",
        pool_padding="-inf",
        stride_on_last_unit=False,
        conv_bias=False,
        norm_epsilon=1e-5,
        norm_momentum=0.9,
        normalization="tf",
        stem="deep",
        avg_down=True,
    ),
}


def get_layout(layout):
    """The `Layout` named `layout` (a `Layout`, or a dict of its fields, passes through)."""
    if isinstance(layout, Layout):
        return layout
    if isinstance(layout, dict):
        return Layout(**layout)
    check_choice("layout", layout, tuple(LAYOUTS))
    return LAYOUTS[layout]


def layout_config(layout):
    """`layout` as a config holds it: every field (its name among them), so a saved model keeps
    the layout it was built with even if a registered layout of that name changes."""
    return dataclasses.asdict(layout)


def resolve_layout(depth, weights, layout=None):
    """`(Layout, resolved weights or None)`: `layout` if given, else the weights', else "paper".

    The one place that decides a net's layout: the builders and the training
    runs ask it. An explicit layout the weights cannot fill is an error.

    >>> resolve_layout(50, "keras:resnet50v2")[0].name, resolve_layout(50, None)[0].name
    ('keras', 'paper')
    """
    if layout is not None:
        layout = get_layout(layout)
    resolved = resolve(weights, depth=depth, layout=layout)
    return layout or get_layout((resolved and resolved.layout) or "paper"), resolved


def _stem(x, layout, norm, width, momentum):
    """`(output, P1)`: the stem convs (the last one's output is the P1 tap), a norm-ReLU where
    the layout has one, the 3x3/2 max-pool. `width` is the stem's output channels."""
    if layout.stem == "deep":  # timm's stem_type="deep": 3x3/2, 3x3, 3x3 with norm-acts
        x = _stem_conv(x, layout, width // 2, 3, 2, "stem_conv1")
        x = common.norm_act(x, norm, "stem_norm1", layout.norm_epsilon, momentum)
        x = _stem_conv(x, layout, width // 2, 3, 1, "stem_conv2")
        x = common.norm_act(x, norm, "stem_norm2", layout.norm_epsilon, momentum)
        x = tap = _stem_conv(x, layout, width, 3, 1, "stem_conv3")
    else:
        x = tap = _stem_conv(x, layout, width, 7, 2, "stem_conv", pad_name="stem_pad")
        if layout.stem_norm:
            x = common.norm_act(x, norm, "stem_bn", layout.norm_epsilon, momentum, "stem_relu")
    if layout.pool_padding == "-inf":
        return SymmetricMaxPooling2D(3, 2, 1, name="stem_pool")(x), tap
    if layout.pool_padding == "zeros":
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        return keras.layers.MaxPooling2D(3, 2, name="stem_pool")(x), tap
    return keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x), tap


def _stem_conv(x, layout, filters, kernel_size, strides, name, pad_name=None):
    """A stem conv: weight-standardised where the layout's convs are, padded as its units."""
    padding = "same"
    if layout.padding == "symmetric" and strides > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=pad_name or f"{name}_pad")(x)
        padding = "valid"
    conv_class = StandardizedConv2D if layout.conv == "standardized" else keras.layers.Conv2D
    return conv_class(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=layout.conv_bias,
        kernel_initializer=he_normal_fan_out(),
        name=name,
    )(x)


@keras.saving.register_keras_serializable(package="keras_preact")
class ImageNetResNetV2(ResNetV2):
    """An ImageNet pre-activation ResNet (18, 34, 50, 101, 152 or 200 layers).

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
            the 224 and 320 test crops run on one model; any channel count
            works (pretrained weights adapt the stem's RGB kernel as timm's
            `adapt_input_conv`).
        include_preprocessing: the model takes raw RGB in [0, 255] and applies
            its layout's normalisation (ImageNet mean/std for `"paper"` and
            `"fb"`, [-1, 1] for `"timm"` and `"keras"`); grayscale inputs with
            the mean of its RGB statistics; other channel counts are not
            normalised (the layer is left out, with a warning).
        layout: `"paper"`, `"timm"`, `"keras"`, `"fb"`, `"bit"` or `"timm_d"`
            (see the module docstring) or a `Layout`; `None` follows the
            weights (else `"paper"`). An explicit layout that the weights
            cannot fill is an error.
        unit_variant, shortcut, shortcut_scale, residual_scale, gate_bias_init,
        shortcut_dropout_rate, drop_path_rate, zero_init_last: passed to every
            unit (see `PreActBlock`; `drop_path_rate` grows linearly to the
            last unit). Foreign weights need the default units (`"full_preact"`
            with `"identity"` shortcuts).
        norm_momentum: BatchNormalization momentum (the layout's by default).
        seed: seed of the units' stochastic depth and shortcut dropout.
        remat: recompute each unit's activations in the backward pass instead of
            keeping them (`PreActBlock`'s `remat`): about a third of the training
            memory of deep nets for about a third more step time.
        norm: `"batch"`, `"group"` (GroupNorm, 32 groups) or `"evonorm_s0"`;
            `None` follows the weights, else the layout's (`"group"` for
            `"bit"`, else `"batch"`).
        width_multiplier: every width times this (BiT's x1 ... x4); `None`
            follows the weights, else 1.
        output_stride: 32 (default, `None`), 16 or 8: the last strides become
            dilations, as timm's `output_stride` (the keras layout as
            TF-slim's), for dense prediction.
        eval_protocol: how the weights are evaluated (an `EvalProtocol` or its
            dict); by default a named source's (resize interpolation, crop
            fraction), else the paper's. Read it back as `model.eval_protocol`.
        name: the model's name (`"resnet{depth}v2"` by default).

    The model's `get_config()` holds all of these but `weights` and
    `input_tensor`, with `unit`, `stage_units` and `stage_widths`; the
    layout as its fields (`model.layout` gives the `Layout` back).

    `model.pyramid_outputs` is `{"P1": ..., "P5": ...}`, keyed by log2 of the
    stride (at output stride 32): the stem conv's output and the last unit's
    output at strides 4 to 32 (for the paper, timm and fb layouts the stage
    outputs, as timm's `features_only` taps); `keras.Model(model.inputs,
    model.pyramid_outputs)` is a feature extractor.

    Example:

    >>> model = ImageNetResNetV2(50, layout="timm")
    >>> sum(w.numpy().size for w in model.trainable_weights)  # timm's resnetv2_50
    25549352
    >>> model.count_params()  # also BN moving statistics and the input mean/std
    25594798
    >>> config = model.get_config()
    >>> config["depth"], config["unit"], config["stage_units"], config["layout"]["name"]
    (50, 'bottleneck', [3, 4, 6, 3], 'timm')
    >>> dense = ImageNetResNetV2(50, include_top=False, output_stride=16)
    >>> [tuple(t.shape[1:]) for t in dense.pyramid_outputs.values()][-1]  # P5
    (None, None, 2048)
    >>> model = ImageNetResNetV2(200, weights="imagenet")  # doctest: +SKIP
    """

    DERIVED = ("unit", "stage_units", "stage_widths")

    def __init__(
        self,
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
        shortcut_scale=None,
        residual_scale=None,
        gate_bias_init=None,
        shortcut_dropout_rate=None,
        drop_path_rate=0.0,
        zero_init_last=False,
        norm_momentum=None,
        seed=None,
        remat=False,
        output_stride=None,
        norm=None,
        width_multiplier=None,
        eval_protocol=None,
        name=None,
        trainable=True,
    ):
        layout, resolved = resolve_layout(depth, weights, layout)
        body = _Body.of(depth, layout, resolved, norm, width_multiplier, output_stride)
        momentum = layout.norm_momentum if norm_momentum is None else norm_momentum
        options = common.UnitOptions.of(
            unit_variant,
            (shortcut, shortcut_scale, residual_scale, gate_bias_init, shortcut_dropout_rate),
            (drop_path_rate, zero_init_last, momentum, seed, remat),
        )
        if resolved is not None and resolved.kind != "native":
            _check_foreign_units(weights, options)
        head = common.HeadOptions(include_top, pooling, classes, classifier_activation)
        eval_protocol = eval_protocol or (resolved and resolved.eval_protocol)
        inputs, x = common.model_input(input_tensor, input_shape, (None, None, 3), min_size=32)
        x, include_preprocessing = common.preprocess(x, include_preprocessing, layout.normalization)
        outputs, taps = body.build(x, options, head)
        config = {
            **body.config(),
            **common.model_config(inputs, include_preprocessing, head, options, eval_protocol),
        }
        name = name or body.default_name()
        self._init_functional(inputs, outputs, name, config, weights, resolved, trainable=trainable)
        self._pyramid_taps = taps  # Keras tracks it as a TrackedDict

    @property
    def pyramid_outputs(self):
        """`{"P1": ..., "P5": ...}` (see the class docstring), a plain dict: a `keras.Model`
        whose outputs are Keras' TrackedDict does not run on JAX."""
        return dict(self._pyramid_taps)

    @property
    def layout(self):
        """The `Layout` the net is built in."""
        return get_layout(self._preact_config["layout"])

    @property
    def normalization(self):
        """How the net's inputs are normalised (a key of `keras_preact.NORMALIZATIONS`)."""
        return self.layout.normalization


def _depth_row(depth):
    """`(unit, units per stage)` of an ImageNet depth, with a clear error for others."""
    if depth not in IMAGENET_DEPTHS:
        raise ValueError(
            f"Invalid ImageNet depth {depth!r}. Allowed values: "
            f"{', '.join(map(str, IMAGENET_DEPTHS))} (CIFAR depths: use CIFARResNetV2)."
        )
    return IMAGENET_DEPTHS[depth]


def _check_foreign_units(weights, options):
    if options.unit_variant != "full_preact" or options.shortcut.shortcut != "identity":
        raise ValueError(
            f"weights={weights!r} are full pre-activation units with identity shortcuts; "
            f"unit_variant={options.unit_variant!r} / shortcut={options.shortcut.shortcut!r} "
            "cannot take them."
        )


@dataclasses.dataclass(frozen=True)
class _Body:
    """Everything of an ImageNet net but its units' options and head: depth, layout, norm,
    width, and each unit's place (stride, dilation)."""

    depth: int
    layout: Layout
    norm: str
    width_multiplier: int
    output_stride: int
    places: tuple

    @classmethod
    def of(cls, depth, layout, resolved, norm, width_multiplier, output_stride):
        """The body the arguments ask for; `norm` and `width_multiplier` (None) follow the
        weights, else the layout's norm and 1."""
        _, stage_units = _depth_row(depth)
        norm, width_multiplier = _norm_and_width(layout, resolved, norm, width_multiplier)
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"output_stride must be 8, 16 or 32 (None: 32), got {output_stride!r}: the nets "
                "subsample 4x in the stem and 2x in stages 2-4; 16 and 8 dilate the last stages."
            )
        places = common.plan_units(
            stage_units,
            STAGE_STRIDES,
            stride_on_last_unit=layout.stride_on_last_unit,
            output_stride=output_stride,
            stem_stride=4,
        )
        return cls(depth, layout, norm, width_multiplier, output_stride or 32, tuple(places))

    @property
    def stage_widths(self):
        return tuple(width * self.width_multiplier for width in STAGE_WIDTHS)

    def default_name(self):
        wide = f"x{self.width_multiplier}" if self.width_multiplier != 1 else ""
        return f"resnet{self.depth}v2{wide}"

    def config(self):
        unit, stage_units = IMAGENET_DEPTHS[self.depth]
        return {
            "depth": self.depth,
            "unit": unit,
            "stage_units": stage_units,
            "stage_widths": self.stage_widths,
            "layout": layout_config(self.layout),
            "norm": self.norm,
            "width_multiplier": self.width_multiplier,
            "output_stride": self.output_stride,
        }

    def build(self, x, options, head):
        """`(outputs, pyramid taps)`: stem, the four stages and the head, as the layout has them."""
        layout, epsilon = self.layout, self.layout.norm_epsilon
        stem_width = STAGE_WIDTHS[0] * self.width_multiplier
        x, stem_tap = _stem(x, layout, self.norm, stem_width, options.norm_momentum)
        x, taps = common.add_stages(
            x,
            IMAGENET_DEPTHS[self.depth][0],
            self.stage_widths,
            self.places,
            options,
            first_stage_preact=layout.stage1_preact,
            raw_projection=layout.raw_projection,
            padding=layout.padding,
            output_bias=layout.conv_bias,
            norm_epsilon=epsilon,
            norm=self.norm,
            conv=layout.conv,
            avg_down=layout.avg_down,
        )
        final_norm = options.facts.final_norm
        outputs = common.add_head(
            x,
            head,
            final_norm=final_norm,
            norm_epsilon=epsilon,
            norm_momentum=options.norm_momentum,
            norm=self.norm,
        )
        return outputs, {"P1": stem_tap, **taps}


def _norm_and_width(layout, resolved, norm, width_multiplier):
    """`norm` and `width_multiplier` as given, else the weights', else the layout's and 1; an
    explicit one the weights cannot fill is an error."""
    for argument, given, stated in (
        ("norm", norm, resolved and resolved.norm),
        ("width_multiplier", width_multiplier, resolved and resolved.width_multiplier),
    ):
        if given is not None and stated is not None and given != stated:
            raise ValueError(
                f"weights={resolved.weights!r} need {argument}={stated!r}, but {argument}="
                f"{given!r} was given. Leave it unset to follow the weights."
            )
    norm = norm or (resolved and resolved.norm) or layout.norm
    check_choice("norm", norm, NORMS)
    width = width_multiplier or (resolved and resolved.width_multiplier) or 1
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width_multiplier must be a positive integer, got {width!r}.")
    return norm, width


def _named(depth):
    def builder(*args, **kwargs):
        return ImageNetResNetV2(depth, **common.bind(builder, args, kwargs))

    unit, stages = IMAGENET_DEPTHS[depth]
    features = STAGE_WIDTHS[-1] * (4 if unit == "bottleneck" else 1)
    doc = f"""Pre-activation ResNet-{depth} for ImageNet: {unit} units, {stages} per stage.

    `ImageNetResNetV2({depth}, ...)`: the same arguments but `depth` (see its
    docstring); keras.applications' (`include_top` ... `classifier_activation`)
    may also be passed positionally, in its order. `layout=None` (default)
    follows the weights, else `"paper"`; `unit_variant`, `shortcut` and the
    shortcut options choose the paper's units (see `PreActBlock`).

    Example:

    >>> model = ResNet{depth}V2(include_top=False, pooling="avg")
    >>> model.output_shape
    (None, {features})
    """
    return common.named_builder(builder, ImageNetResNetV2, ("depth",), f"ResNet{depth}V2", doc)


ResNet18V2 = _named(18)
ResNet34V2 = _named(34)
ResNet50V2 = _named(50)
ResNet101V2 = _named(101)
ResNet152V2 = _named(152)
ResNet200V2 = _named(200)
