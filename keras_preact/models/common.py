"""Pieces the CIFAR and ImageNet nets share: the options every unit and head takes, units per
stage, input, stages, head, and the signatures of the named builders (ResNet50V2, ...)."""

from __future__ import annotations

import dataclasses
import inspect
import os
import warnings

import keras

from keras_preact import layers as preact_layers
from keras_preact import preprocessing
from keras_preact.normalization import make_norm
from keras_preact.options import EvalProtocol, ShortcutOptions, check_choice
from keras_preact.weights import detect_format, registry

UNIT_CLASSES = {
    "basic": preact_layers.PreActBlock,
    "one_layer": preact_layers.PreActBlock,
    "bottleneck": preact_layers.PreActBottleneck,
}
# Convolutions per unit, to turn a depth into units per stage.
CONVS_PER_UNIT = {"basic": 2, "one_layer": 1, "bottleneck": 3}

# keras.applications' builder arguments, in its order: the named builders take them
# positionally too (`ResNet50V2(False, None)`), the rest by keyword only.
APPLICATIONS_ARGS = (
    "include_top",
    "weights",
    "input_tensor",
    "input_shape",
    "pooling",
    "classes",
    "classifier_activation",
)


def named_builder(builder, general, fixed, name, doc):
    """Gives `builder` (a `(*args, **kwargs)` closure over `general`) its public face.

    Its signature is `general`'s without the arguments in `fixed` (the depth,
    for CIFAR the unit too), so `help()` and `inspect.signature` list every
    argument; `bind` checks calls against it.
    """
    parameters = []
    for parameter in inspect.signature(general).parameters.values():
        if parameter.name in fixed:
            continue
        if parameter.name in APPLICATIONS_ARGS:
            parameter = parameter.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
        parameters.append(parameter)
    builder.__signature__ = inspect.Signature(parameters)
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return builder


def bind(builder, args, kwargs):
    """The arguments of a call to a named builder, checked against its signature (TypeError)."""
    try:
        return builder.__signature__.bind(*args, **kwargs).arguments
    except TypeError as error:
        raise TypeError(f"{builder.__name__}() {error}") from None


@dataclasses.dataclass(frozen=True)
class UnitOptions:
    """What every unit of a net shares: the paper's unit and shortcut variants and training
    settings (see `PreActBlock`; `drop_path_rate` grows linearly to the last unit)."""

    unit_variant: str = "full_preact"
    shortcut: ShortcutOptions = ShortcutOptions()
    drop_path_rate: float = 0.0
    zero_init_last: bool = False
    norm_momentum: float = 0.9
    seed: int | None = None
    remat: bool = False

    def __post_init__(self):
        check_choice("unit_variant", self.unit_variant, preact_layers.UNIT_VARIANTS)

    @classmethod
    def of(cls, unit_variant, shortcut_arguments, training_arguments):
        """From the builders' arguments: `(shortcut, shortcut_scale, residual_scale,
        gate_bias_init, shortcut_dropout_rate)` and `(drop_path_rate, zero_init_last,
        norm_momentum, seed, remat)`."""
        return cls(unit_variant, ShortcutOptions(*shortcut_arguments), *training_arguments)

    @property
    def facts(self):
        return preact_layers.UNIT_VARIANT_FACTS[self.unit_variant]

    def as_config(self):
        """The builder arguments, flat: `shortcut` and its options as separate keys, each option
        of the shortcut at its value (the paper's where none was given)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shortcut = dataclasses.asdict(values.pop("shortcut").resolved())
        return {"unit_variant": values.pop("unit_variant"), **shortcut, **values}


@dataclasses.dataclass(frozen=True)
class HeadOptions:
    """What the net ends with (as in keras.applications): classifier or pooling."""

    include_top: bool = True
    pooling: str | None = None
    classes: int = 1000
    classifier_activation: str | None = "softmax"

    def __post_init__(self):
        check_choice("pooling", self.pooling, (None, "avg", "max"))
        if self.include_top and (not isinstance(self.classes, int) or self.classes < 1):
            raise ValueError(
                f"classes must be a positive integer with include_top=True, got {self.classes!r}."
            )

    def as_config(self):
        config = dataclasses.asdict(self)
        if callable(self.classifier_activation):  # a function: its serialized name or config
            config["classifier_activation"] = keras.activations.serialize(
                self.classifier_activation
            )
        return config


def model_input(input_tensor, input_shape, default_shape, min_size):
    """Validates `input_shape` and returns `(inputs, x)` like keras.applications."""
    if input_shape is None:
        if input_tensor is not None and hasattr(input_tensor, "shape"):
            input_shape = tuple(input_tensor.shape[1:])
        else:
            input_shape = default_shape
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels) with channels last, got {input_shape}."
        )
    height, width, channels = input_shape
    if channels is None or channels < 1:
        raise ValueError(f"input_shape {input_shape} needs a known, positive channel count.")
    for side in (height, width):
        if side is not None and side < min_size:
            raise ValueError(
                f"input_shape {input_shape} is too small: height and width must be >= {min_size} "
                "(or None for any size)."
            )
    if input_tensor is None:
        inputs = keras.Input(shape=input_shape, name="image")
        return inputs, inputs
    if not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.Input(tensor=input_tensor, shape=input_shape, name="image")
        return inputs, inputs
    return input_tensor, input_tensor


@dataclasses.dataclass
class UnitPlace:
    """Where one unit sits and how it subsamples: built by `plan_units`."""

    stage: int
    index: int
    strides: int = 1
    projection: bool | None = None  # False: a strided identity (subsampling) shortcut
    dilation: int = 1
    first_dilation: int = 1
    nominal_stride: int = 1  # the net's stride after this unit at output_stride 32


def plan_units(stage_units, stage_strides, *, stride_on_last_unit, output_stride, stem_stride):
    """Every unit's stride and dilation (`UnitPlace`s, in order).

    A stage's stride sits on its first unit (the paper, timm), or with
    `stride_on_last_unit` on the last unit of the previous stage with an
    identity (subsampling) shortcut (keras.applications, TF-slim). Once the
    net's stride reaches `output_stride`, a unit's stride becomes a dilation:
    the unit's first 3x3 keeps the rate so far and the units after it take the
    rate times the stride (timm's `output_stride`); a stride on the last unit
    (TF-slim's `output_stride`) dilates only the units after it.

    >>> [(u.strides, u.first_dilation, u.dilation) for u in plan_units(
    ...     (1, 1, 1, 1), (1, 2, 2, 2), stride_on_last_unit=False, output_stride=8, stem_stride=4)]
    [(1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4)]
    """
    places = [UnitPlace(stage, index) for stage, n in enumerate(stage_units) for index in range(n)]
    for stage, stride in enumerate(stage_strides):
        first = sum(stage_units[:stage])
        if not stride_on_last_unit:
            places[first].strides = stride
        elif stage > 0 and stride != 1:
            places[first - 1].strides, places[first - 1].projection = stride, False
    stride, nominal, rate = stem_stride, stem_stride, 1
    for place in places:
        nominal *= place.strides
        place.nominal_stride = nominal
        place.first_dilation = place.dilation = rate
        if place.strides > 1 and output_stride and stride >= output_stride:
            place.dilation = rate if stride_on_last_unit else rate * place.strides
            rate, place.strides = rate * place.strides, 1
        stride *= place.strides
    return places


def add_stages(x, unit, stage_widths, places, options, *, first_stage_preact=True, **layout_args):
    """Stacks the residual units of `places` (`plan_units`) with `options` (`UnitOptions`).

    Returns `(output, taps)`: `taps` maps `"P{k}"` to the last unit output at
    the net's stride 2**k (as it would be at output_stride 32). Without
    `first_stage_preact`, the units of the first stage have no pre-activation
    of their own (fb.resnet.torch's `'first'` units after a BN-ReLU stem).
    `layout_args` are unit arguments a layout sets (padding, biases, BN epsilon).
    """
    unit_class = UNIT_CLASSES[unit]
    extra = {"num_convs": 1} if unit == "one_layer" else {}
    unit_args = options.as_config()
    rate, seed = unit_args.pop("drop_path_rate"), unit_args.pop("seed")
    unit_args = {k: v for k, v in unit_args.items() if v is not None}
    # A unit without a pre-activation (unit_variant "original" and the like) has none to skip.
    has_preact = preact_layers.UNIT_VARIANT_FACTS[options.unit_variant].preact_relu
    taps = {}
    for position, place in enumerate(places):
        x = unit_class(
            stage_widths[place.stage],
            strides=place.strides,
            projection=place.projection,
            dilation=place.dilation,
            first_dilation=place.first_dilation,
            drop_path_rate=rate * position / max(len(places) - 1, 1),
            seed=None if seed is None else seed + position,
            preactivate=first_stage_preact or place.stage > 0 or not has_preact,
            name=f"stage{place.stage + 1}_unit{place.index + 1}",
            **extra,
            **unit_args,
            **layout_args,
        )(x)
        taps[f"P{place.nominal_stride.bit_length() - 1}"] = x
    return x, taps


def norm_act(x, norm, name, epsilon, momentum, act_name=None):
    """The norm layer `name` of kind `norm` (`keras_preact.normalization.make_norm`) and its ReLU
    (none after EvoNorm-S0, which has its own activation)."""
    x = make_norm(norm, name, epsilon=epsilon, momentum=momentum)(x)
    if norm == "evonorm_s0":
        return x
    return keras.layers.Activation("relu", name=act_name or f"{name}_relu")(x)


def add_head(x, head, *, final_norm, norm_epsilon, norm_momentum, norm="batch"):
    """Final norm-ReLU (`final_norm`: units that leave the sum unactivated), pooling, classifier."""
    if final_norm:
        x = norm_act(x, norm, "post_bn", norm_epsilon, norm_momentum, "post_relu")
    if head.include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(
            head.classes,
            activation=head.classifier_activation,
            name="predictions",
            dtype="float32",  # logits/probabilities stay float32 under mixed precision
        )(x)
    elif head.pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif head.pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def model_config(inputs, include_preprocessing, head, options, eval_protocol):
    """The config entries every net has: input, preprocessing, head, units, eval protocol."""
    return {
        "input_shape": tuple(inputs.shape[1:]),
        "include_preprocessing": include_preprocessing,
        **head.as_config(),
        **options.as_config(),
        "eval_protocol": EvalProtocol.from_dict(eval_protocol).as_dict(),
    }


def check_cifar_weights(weights):
    """CIFAR nets load Keras files only: every public checkpoint is an ImageNet net."""
    foreign = registry.is_source_name(weights)
    if not foreign and isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        foreign = not os.fspath(weights).endswith((".weights.h5", ".keras"))
        foreign = foreign and detect_format(weights) != "keras"
    if foreign:
        raise ValueError(
            f"weights={weights!r} are ImageNet weights; the CIFAR nets have no public "
            "pretrained checkpoints. Use ResNet18V2 ... ResNet200V2 for ImageNet weights, or "
            "pass a .weights.h5 / .keras file of a CIFAR net (train one with recipes/cifar.py)."
        )


def preprocess(x, include_preprocessing, normalization):
    """`(x, whether x is normalised)`: the `preprocessing` layer for RGB or grayscale inputs.

    Grayscale (1 channel) takes the mean of the RGB statistics; any other
    channel count is not RGB, so the layer is left out (a warning says so)
    and the caller normalises the inputs.
    """
    channels = x.shape[-1]
    if include_preprocessing and channels not in (1, 3):
        warnings.warn(
            f"include_preprocessing=True normalises RGB (or grayscale) images, but the input has "
            f"{channels} channels: the model is built without its preprocessing layer. Normalise "
            "the inputs yourself, or pass include_preprocessing=False to silence this.",
            stacklevel=3,
        )
        include_preprocessing = False
    if include_preprocessing:
        x = preprocessing.normalization_layer(normalization, "preprocessing", channels)(x)
    return x, include_preprocessing
