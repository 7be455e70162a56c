"""Residual units of "Identity Mappings in Deep Residual Networks" (He et al., 2016).

`PreActBlock` (3x3 convolutions) and `PreActBottleneck` (1x1 -> 3x3 -> 1x1, 4x
expansion) are one unit class with the paper's variants as arguments:

* `unit_variant` is where BN and ReLU sit (the paper's Fig. 4 / Table 2):
  `"original"` (a), `"bn_after_addition"` (b), `"relu_before_addition"` (c),
  `"relu_only_preact"` (d) and `"full_preact"` (e, the proposal; default).
  `UNIT_VARIANT_FACTS` states what each means for a unit and for a whole net
  (e.g. whether it ends with a BN-ReLU after the last unit).
* `shortcut` is what the skip connection computes (Fig. 2 / Table 1):
  `"identity"` (a projection only where shapes change; default),
  `"constant_scaling"`, `"exclusive_gating"`, `"shortcut_only_gating"`,
  `"conv1x1"` (a 1x1 convolution on every unit) and `"dropout"`.

Where a unit changes dimensions, the pre-activation (BN -> ReLU for
`full_preact`, ReLU for `relu_only_preact`) runs once before the split and the
1x1 projection takes the pre-activated tensor (the paper's appendix); units
that keep dimensions feed the raw input to the shortcut.

The units are channels-last Keras 3 layers written with `keras.ops`, so they
run on any backend and serialize with `get_config`. Their norms are
`FusedBatchNormalization` (on TensorFlow, its fused kernel) by default, or
GroupNorm / EvoNorm-S0 (`norm=`), their convs plain or weight-standardised
(`conv=`, BiT).
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
from keras import ops

from keras_preact.normalization import NORMS, make_norm
from keras_preact.options import SHORTCUTS, ShortcutOptions, check_choice
from keras_preact.remat import rematerialize


@dataclasses.dataclass(frozen=True, kw_only=True)
class VariantFacts:
    """Where one `unit_variant` puts BN and ReLU; the units and the model builders read these."""

    preact_norm: bool  # F starts with a BN (-> ReLU): `norm1`
    preact_relu: bool  # F starts with a ReLU: the unit has a pre-activation (`preactivate`)
    ends_with_norm: bool  # F ends with a BN (zero_init_last zeroes its gamma, else the last conv)
    branch_relu: bool  # a ReLU on F after its last BN, before the addition
    output_norm: bool  # a BN after the addition (`output_norm`)
    output_relu: bool  # a ReLU after the addition: the unit's output is activated

    @property
    def post_activation(self):
        """No pre-activation: a projection is conv + BN, as in ResNet-v1."""
        return not self.preact_relu

    @property
    def final_norm(self):
        """The outputs are not activated, so the net adds a BN-ReLU after the last unit."""
        return not self.output_relu


# The five units of the paper's Fig. 4, compared in its Table 2 (F is the residual branch,
# "weight" a conv); the table below states what each means for the units and the builders:
#   (a) original:                 weight-BN-ReLU-weight-BN, addition, ReLU
#   (b) BN after addition:        weight-BN-ReLU-weight, addition, BN-ReLU
#   (c) ReLU before addition:     weight-BN-ReLU-weight-BN-ReLU, addition
#   (d) ReLU-only pre-activation: ReLU-weight-BN-ReLU-weight-BN, addition
#   (e) full pre-activation:      BN-ReLU-weight-BN-ReLU-weight, addition (the proposal)
# (c), (d) and (e) leave the sum unactivated, so their nets add an extra BN-ReLU after the
# last unit's addition (`final_norm`); (a) to (c) are post-activation units, whose
# projection shortcuts are conv + BN as in ResNet-v1 (`post_activation`).
UNIT_VARIANT_FACTS = {
    "original": VariantFacts(  # (a)
        preact_norm=False,
        preact_relu=False,
        ends_with_norm=True,
        branch_relu=False,
        output_norm=False,
        output_relu=True,
    ),
    "bn_after_addition": VariantFacts(  # (b)
        preact_norm=False,
        preact_relu=False,
        ends_with_norm=False,
        branch_relu=False,
        output_norm=True,
        output_relu=True,
    ),
    "relu_before_addition": VariantFacts(  # (c)
        preact_norm=False,
        preact_relu=False,
        ends_with_norm=True,
        branch_relu=True,
        output_norm=False,
        output_relu=False,
    ),
    "relu_only_preact": VariantFacts(  # (d)
        preact_norm=False,
        preact_relu=True,
        ends_with_norm=True,
        branch_relu=False,
        output_norm=False,
        output_relu=False,
    ),
    "full_preact": VariantFacts(  # (e)
        preact_norm=True,
        preact_relu=True,
        ends_with_norm=False,
        branch_relu=False,
        output_norm=False,
        output_relu=False,
    ),
}
UNIT_VARIANTS = tuple(UNIT_VARIANT_FACTS)
PADDINGS = ("same", "symmetric")
CONVS = ("plain", "standardized")


@keras.saving.register_keras_serializable(package="keras_preact")
class StandardizedConv2D(keras.layers.Conv2D):
    """`Conv2D` with weight standardisation (BiT; timm's `StdConv2d`).

    Each output channel's kernel is standardised over its inputs and window
    before use: `(w - mean) / sqrt(var + epsilon)` (biased variance; BiT's
    epsilon is 1e-8). The stored kernel is the raw one, as in timm's files.

    >>> conv = StandardizedConv2D(4, 3)
    >>> tuple(conv(keras.ops.ones((1, 8, 8, 2))).shape)
    (1, 6, 6, 4)
    """

    def __init__(self, *args, epsilon=1e-8, **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon = float(epsilon)

    def convolution_op(self, inputs, kernel):
        # In float32 whatever the policy: an epsilon of 1e-8 is 0 in float16 (timm does the same).
        kernel32 = ops.cast(kernel, "float32")
        mean = ops.mean(kernel32, axis=(0, 1, 2), keepdims=True)
        variance = ops.var(kernel32, axis=(0, 1, 2), keepdims=True)
        standardized = (kernel32 - mean) / ops.sqrt(variance + self.epsilon)
        return super().convolution_op(inputs, ops.cast(standardized, inputs.dtype))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def he_normal_fan_out():
    """The authors' conv init: normal(0, sqrt(2 / (k * k * c_out))), untruncated."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


@keras.saving.register_keras_serializable(package="keras_preact")
class SymmetricMaxPooling2D(keras.layers.Layer):
    """Max pooling with PyTorch's symmetric padding, padded values ignored.

    Keras' `"same"` pooling pads 0 before and 1 after on even sizes; PyTorch's
    `MaxPool2d(3, 2, padding=1)` pads one pixel on every side with -inf. This
    layer reproduces the latter, which converted timm weights need.

    Example:

    >>> pool = SymmetricMaxPooling2D(pool_size=3, strides=2, padding=1)
    >>> tuple(pool(keras.ops.ones((1, 112, 112, 64))).shape)
    (1, 56, 56, 64)
    """

    def __init__(self, pool_size=3, strides=2, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.strides = strides
        self.padding = padding

    def call(self, inputs):
        p = self.padding
        padded = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=float("-inf"))
        return ops.max_pool(padded, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        def out(size):
            if size is None:
                return None
            return (size + 2 * self.padding - self.pool_size) // self.strides + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding)
        return config


@contextlib.contextmanager
def subsample_by_slicing(model):
    """Inside the block, `model`'s strided shortcuts subsample with a strided slice.

    Outside it they take a 1x1 max-pool: the same values, faster in TensorFlow.
    A graph traced inside it (a TFLite conversion source) has the slice, which
    the TFLite converter folds into the projection's convolution (one stride-2
    1x1 conv) where it keeps a max-pool as an op of its own.
    """
    units = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, _ResidualUnit)
    ]
    for unit in units:
        unit._subsample_by_slicing = True
    try:
        yield model
    finally:
        for unit in units:
            unit._subsample_by_slicing = False


class _ResidualUnit(keras.layers.Layer):
    """Shared implementation of `PreActBlock` and `PreActBottleneck`.

    A subclass states its residual branch F in `_conv_specs` (kernel size,
    filters multiplier, whether the unit's stride sits on it); its convs are
    `conv1 ... conv{num_convs}` and its BNs `norm1, norm2, ...` numbered in
    the order F applies them.
    """

    expansion = 1
    num_convs = 2
    _subsample_by_slicing = False  # set by `subsample_by_slicing` while a graph is traced

    def __init__(
        self,
        filters,
        strides=1,
        unit_variant="full_preact",
        shortcut="identity",
        projection=None,
        shortcut_scale=None,
        residual_scale=None,
        gate_bias_init=None,
        shortcut_dropout_rate=None,
        drop_path_rate=0.0,
        zero_init_last=False,
        preactivate=True,
        raw_projection=False,
        padding="same",
        output_bias=False,
        norm_epsilon=1e-5,
        norm_momentum=0.9,
        seed=None,
        remat=False,
        dilation=1,
        first_dilation=None,
        norm="batch",
        conv="plain",
        avg_down=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        options = ShortcutOptions(
            shortcut, shortcut_scale, residual_scale, gate_bias_init, shortcut_dropout_rate
        )
        # shortcut, shortcut_scale, residual_scale, gate_bias_init, shortcut_dropout_rate:
        # the paper's value for this shortcut's options, None for the others.
        for option, value in dataclasses.asdict(options.resolved()).items():
            setattr(self, option, value)
        self.filters = int(filters)
        self.strides = int(strides)
        self.unit_variant = unit_variant
        self.projection = projection
        self.drop_path_rate = float(drop_path_rate)
        self.zero_init_last = bool(zero_init_last)
        self.preactivate = bool(preactivate)
        self.raw_projection = bool(raw_projection)
        self.padding = padding
        self.output_bias = bool(output_bias)
        self.norm_epsilon = float(norm_epsilon)
        self.norm_momentum = float(norm_momentum)
        self.seed = seed
        self.remat = bool(remat)
        self.dilation = int(dilation)
        self.first_dilation = self.dilation if first_dilation is None else int(first_dilation)
        self.norm, self.conv, self.avg_down = norm, conv, bool(avg_down)
        self._check_arguments()
        if self.drop_path_rate > 0.0:
            self.seed_generator = keras.random.SeedGenerator(seed)

    def _check_arguments(self):
        check_choice("unit_variant", self.unit_variant, UNIT_VARIANTS)
        check_choice("padding", self.padding, PADDINGS)
        check_choice("norm", self.norm, NORMS)
        check_choice("conv", self.conv, CONVS)
        if self.filters < 1 or self.strides < 1:
            raise ValueError(
                f"filters and strides must be positive integers, got {self.filters}, {self.strides}."
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}.")
        if not self.preactivate and not self.variant_facts.preact_relu:
            raise ValueError(
                f"preactivate=False removes the pre-activation of a pre-activation unit; "
                f"unit_variant={self.unit_variant!r} has none."
            )
        if self.shortcut == "conv1x1" and self.projection is False:
            raise ValueError(
                "shortcut='conv1x1' puts a projection on every unit; projection=False contradicts it."
            )
        if self.norm == "evonorm_s0" and (
            self.unit_variant != "full_preact" or self.raw_projection
        ):
            raise ValueError(
                "norm='evonorm_s0' has its own activation, so it takes the full pre-activation "
                "unit only (unit_variant='full_preact', no raw_projection: no norm without a ReLU)."
            )
        if min(self.dilation, self.first_dilation) < 1 or (
            self.strides > 1 and max(self.dilation, self.first_dilation) > 1
        ):
            raise ValueError(
                f"dilation and first_dilation must be >= 1, and 1 on a strided unit (a dilation "
                f"replaces the stride); got strides={self.strides}, dilation={self.dilation}, "
                f"first_dilation={self.first_dilation}."
            )

    # Subclasses state their residual branch as (kernel size, filters multiplier, strided).
    def _conv_specs(self):
        raise NotImplementedError  # abstract: PreActBlock and PreActBottleneck define it

    @property
    def output_filters(self):
        return self.filters * self.expansion

    @property
    def variant_facts(self):
        """The `VariantFacts` of this unit's `unit_variant`."""
        return UNIT_VARIANT_FACTS[self.unit_variant]

    @property
    def projects(self):
        """Whether the shortcut is a 1x1 conv (decided when the unit is built), not the identity."""
        if not self.built:
            raise ValueError(f"{self.name} is not built yet: call it on an input first.")
        return self._project

    def norm_before_conv(self, index):
        """The name of the BN that F applies before conv `index` (2 ... num_convs)."""
        has_norm1 = self.variant_facts.preact_norm and self.preactivate
        return f"norm{index if has_norm1 else index - 1}"

    def last_norm(self):
        """The name of the BN that ends F (units whose `variant_facts.ends_with_norm`)."""
        return f"norm{self.num_convs}"

    # ----------------------------------------------------------------- building
    def _norm(self, name, zero_gamma=False):
        return make_norm(
            self.norm,
            name,
            epsilon=self.norm_epsilon,
            momentum=self.norm_momentum,
            zero_gamma=zero_gamma,
            dtype=self.dtype_policy,
        )

    def _conv(self, name, filters, kernel_size, strides, use_bias, zero=False, dilation=1):
        padding = "same"  # with stride 1 (dilated or not), "same" pads symmetrically
        pad = None
        if kernel_size > 1 and (self.padding == "symmetric" and strides > 1):
            # PyTorch pads k//2 on every side; Keras "same" pads 0 before / 1 after
            # on even sizes when strided. Explicit padding + "valid" matches PyTorch.
            pad = keras.layers.ZeroPadding2D(
                kernel_size // 2, name=name + "_pad", dtype=self.dtype_policy
            )
            padding = "valid"
        conv = (StandardizedConv2D if self.conv == "standardized" else keras.layers.Conv2D)(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=dilation,
            use_bias=use_bias,
            kernel_initializer="zeros" if zero else he_normal_fan_out(),
            name=name,
            dtype=self.dtype_policy,
        )
        return pad, conv

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                f"{type(self).__name__} needs a known channel count, got {input_shape}."
            )
        out_channels = self.output_filters
        if self.shortcut == "conv1x1":
            project = True
        elif self.projection is None:
            project = in_channels != out_channels or self.strides != 1
        else:
            project = bool(self.projection)
        if not project and in_channels != out_channels:
            raise ValueError(
                f"{self.name}: the identity shortcut cannot map {in_channels} to {out_channels} "
                "channels; use projection=True (or None to decide automatically)."
            )
        self._project = project
        self._projection_norm = self.variant_facts.post_activation or self.raw_projection
        # Every sublayer is built here with the shape it will see, so weights load before
        # any call; the attribute names are the weights' names.
        shape = self._build_branch(tuple(input_shape))
        self._build_shortcut(input_shape, shape)
        if self.variant_facts.output_norm:
            self._add("output_norm", self._norm("output_norm"), shape)
        self.built = True

    def _add(self, attr, layer, in_shape):
        """Sets `layer` as attribute `attr`, builds it on `in_shape`; returns its output shape."""
        setattr(self, attr, layer)
        layer.build(in_shape)
        return tuple(layer.compute_output_shape(in_shape))

    def _build_branch(self, shape):
        """Builds F's convs (with their padding) and BNs; returns F's output shape."""
        facts = self.variant_facts
        if facts.preact_norm and self.preactivate:
            shape = self._add("norm1", self._norm("norm1"), shape)
        for index, (kernel_size, multiplier, strided) in enumerate(self._conv_specs(), 1):
            if index > 1:
                name = self.norm_before_conv(index)
                shape = self._add(name, self._norm(name), shape)
            last = index == self.num_convs
            pad, conv = self._conv(
                f"conv{index}",
                self.filters * multiplier,
                kernel_size,
                self.strides if strided else 1,
                use_bias=self.output_bias and last,
                zero=self.zero_init_last and last and not facts.ends_with_norm,
                dilation=self._conv_dilation(kernel_size, strided),
            )
            if pad is not None:
                shape = self._add(f"conv{index}_pad", pad, shape)
            shape = self._add(f"conv{index}", conv, shape)
        if facts.ends_with_norm:
            name = self.last_norm()
            shape = self._add(name, self._norm(name, zero_gamma=self.zero_init_last), shape)
        return shape

    def _conv_dilation(self, kernel_size, strided):
        """The strided 3x3 conv takes `first_dilation`, the other 3x3 convs `dilation` (timm)."""
        if kernel_size == 1:
            return 1
        return self.first_dilation if strided else self.dilation

    def _build_shortcut(self, input_shape, shape):
        """Builds the projection, its BN, the gate and the shortcut dropout, as the unit has them."""
        out_channels = self.output_filters
        # Strided 1x1 convs run as subsample + stride-1 conv: the same numbers, and it
        # sidesteps a oneDNN crash in the filter gradient of strided 1x1 convs (TF 2.21).
        shortcut_in = self.compute_output_shape(input_shape)[:3] + (input_shape[-1],)
        if self._project:
            _, conv = self._conv("downsample", out_channels, 1, 1, self.output_bias)
            self._add("downsample", conv, shortcut_in)
            if self._projection_norm:
                self._add("downsample_norm", self._norm("downsample_norm"), shape)
        if self.shortcut in ("exclusive_gating", "shortcut_only_gating"):
            gate = keras.layers.Conv2D(
                out_channels,
                1,
                use_bias=True,
                kernel_initializer=he_normal_fan_out(),
                bias_initializer=keras.initializers.Constant(self.gate_bias_init),
                name="gate",
                dtype=self.dtype_policy,
            )
            self._add("gate", gate, shortcut_in)
        if self.shortcut == "dropout":
            self.shortcut_dropout = keras.layers.Dropout(
                self.shortcut_dropout_rate, seed=self.seed, name="shortcut_dropout"
            )

    # ------------------------------------------------------------------ calling
    def call(self, inputs, training=None):
        masks = self._random_masks(inputs, training)
        if not (self.remat and training):
            return self._forward(inputs, masks, training)
        # Rematerialisation: only the unit's input is kept for the backward pass, which
        # runs the unit again to rebuild its activations. The random masks are drawn
        # once, above, so both runs see the same ones; the second run normalises with
        # the batch statistics without moving the BN statistics a second time.
        if keras.backend.backend() != "tensorflow":
            return self._rematerialized_elsewhere(inputs, masks)
        runs = []

        def forward(x, *masks):
            update_statistics = not runs
            runs.append(update_statistics)
            return self._forward(x, masks, training=True, update_statistics=update_statistics)

        return rematerialize(forward)(inputs, *masks)

    def _rematerialized_elsewhere(self, inputs, masks):
        """Rematerialisation on JAX and PyTorch (`keras.remat`), whose rematerialised function
        may not assign variables: JAX traces it (an assignment there leaks a tracer) and
        PyTorch runs it twice. It returns its BNs' batch statistics instead, and the moving
        statistics move here, once."""
        names = []

        def forward(x, *masks):
            moments = []
            outputs = self._forward(x, masks, training=True, moments=moments)
            if not names:  # the same norms, in the same order, at every trace or run
                names.extend(name for name, _, _ in moments)
            return (outputs, *[v for _, mean, variance in moments for v in (mean, variance)])

        outputs, *moments = rematerialize(forward)(inputs, *masks)
        for index, name in enumerate(names):
            getattr(self, name).move_statistics(moments[2 * index], moments[2 * index + 1])
        return outputs

    def _random_masks(self, inputs, training):
        """The unit's random factors for this call: (drop-path mask, shortcut-dropout mask)."""
        if not training:
            return ()
        masks = []
        batch = ops.shape(inputs)[0]
        if self.drop_path_rate > 0.0:
            keep = 1.0 - self.drop_path_rate
            noise = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator)
            masks.append(ops.cast(noise < keep, self.compute_dtype) / keep)
        if self.shortcut == "dropout":
            # The dropout layer's scaled keep-mask (1 / (1 - rate) or 0) of the shortcut's shape.
            height, width = (-(-ops.shape(inputs)[i] // self.strides) for i in (1, 2))
            shape = (batch, height, width, self.output_filters)
            ones = ops.ones(shape, dtype=self.compute_dtype)
            masks.append(self.shortcut_dropout(ones, training=True))
        return tuple(masks)

    def _forward(self, inputs, masks, training, update_statistics=True, moments=None):
        """The unit: x -> shortcut(x) + F(x), with BN and ReLU where `unit_variant` puts them.

        With `update_statistics=False` its batch norms leave their moving statistics
        alone; given a list `moments`, they do too, and append `(name, batch mean, batch
        variance)` to it instead."""

        def norm(name, x):  # the norm called `name`; a remat recomputation keeps BN statistics
            layer = getattr(self, name)
            moves = training and layer.trainable and self.norm == "batch"
            if moves and moments is not None:
                outputs, mean, variance = layer.batch_statistics(x)
                moments.append((name, mean, variance))
                return outputs
            if update_statistics or not moves:
                return layer(x, training=training)
            return layer.normalize_with_batch_statistics(x)

        if self.unit_variant == "full_preact":
            shortcut_in, shortcut, residual = self._full_preact(inputs, norm)
        else:
            shortcut_in, shortcut, residual = self._other_variant(inputs, norm)
        outputs = self._add_shortcut(shortcut_in, shortcut, residual, masks)
        if self.variant_facts.output_norm:  # (b)
            outputs = norm("output_norm", outputs)
        if self.variant_facts.output_relu:  # (a), (b)
            outputs = ops.relu(outputs)
        return outputs

    def _full_preact(self, x, norm):
        """Fig. 4(e), the paper's unit: BN-ReLU-conv1, BN-ReLU-conv2 (, BN-ReLU-conv3)."""
        preact = self._act(norm("norm1", x)) if self.preactivate else x
        shortcut_in, shortcut = self._shortcut(x, preact, norm)
        residual = self._apply_conv(1, preact)
        for index in range(2, self.num_convs + 1):
            residual = self._act(norm(self.norm_before_conv(index), residual))
            residual = self._apply_conv(index, residual)
        return shortcut_in, shortcut, residual

    def _act(self, x):
        """The ReLU after a norm; none after EvoNorm-S0, which has its own activation."""
        return x if self.norm == "evonorm_s0" else ops.relu(x)

    def _other_variant(self, x, norm):
        """Fig. 4(a)-(d): conv1, BN-ReLU-conv2 (, BN-ReLU-conv3), then as the variant says."""
        facts = self.variant_facts
        preact = ops.relu(x) if facts.preact_relu and self.preactivate else x  # (d)
        shortcut_in, shortcut = self._shortcut(x, preact, norm)
        residual = self._apply_conv(1, preact)
        for index in range(2, self.num_convs + 1):
            residual = ops.relu(norm(self.norm_before_conv(index), residual))
            residual = self._apply_conv(index, residual)
        if facts.ends_with_norm:  # (a), (c), (d)
            residual = norm(self.last_norm(), residual)
        if facts.branch_relu:  # (c)
            residual = ops.relu(residual)
        return shortcut_in, shortcut, residual

    def _apply_conv(self, index, x):
        """conv{index}, after its explicit padding where it has one (`padding="symmetric"`)."""
        if hasattr(self, f"conv{index}_pad"):
            x = getattr(self, f"conv{index}_pad")(x)
        return getattr(self, f"conv{index}")(x)

    def _shortcut(self, inputs, preact, norm):
        """`(what the projection and gate see, the shortcut)` before scaling or gating (Fig. 2).

        Identity units feed the raw input to the shortcut; a projection takes
        the pre-activated tensor (the shared BN-ReLU of the paper's appendix),
        or with `raw_projection` the raw input (fb.resnet.torch).
        """
        x = preact if self._project and not self.raw_projection else inputs
        if self._project and self.avg_down:
            x = self._average_down(x)  # the 'd' nets: average-pool, then the 1x1 conv
        elif self.strides > 1:
            # What a strided 1x1 conv sees: every strides-th pixel. A 1x1 max-pool of that
            # stride (keras.applications' op) is 7% of ResNet-50's inference faster in
            # TensorFlow on a CPU than the strided slice; TFLite folds the slice into the
            # projection's convolution instead (`subsample_by_slicing`).
            if self._subsample_by_slicing:
                x = x[:, :: self.strides, :: self.strides, :]
            else:
                x = ops.max_pool(x, 1, self.strides, padding="valid")
        if not self._project:
            return x, x
        shortcut = self.downsample(x)
        if self._projection_norm:
            shortcut = norm("downsample_norm", shortcut)
        return x, shortcut

    def _average_down(self, x):
        """timm's `DownsampleAvg`: a 2x2 average pool of stride 2 (ceil mode, padding not
        counted); in a dilated stage stride 1 with one zero row and column after, counted."""
        if self.strides > 1:
            return ops.average_pool(x, 2, self.strides, padding="same")
        if self.first_dilation > 1 or self.dilation > 1:
            x = ops.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])
            return ops.average_pool(x, 2, 1, padding="valid")
        return x

    def _add_shortcut(self, shortcut_in, shortcut, residual, masks):
        """shortcut + F with the shortcut's scaling, gating or dropout, and F's drop-path."""
        masks = list(masks)
        path_mask = masks.pop(0) if masks and self.drop_path_rate > 0.0 else None
        if self.shortcut == "constant_scaling":
            shortcut = shortcut * self.shortcut_scale
            residual = residual * self.residual_scale
        elif self.shortcut in ("exclusive_gating", "shortcut_only_gating"):
            gate = ops.sigmoid(self.gate(shortcut_in))
            shortcut = (1.0 - gate) * shortcut
            if self.shortcut == "exclusive_gating":
                residual = gate * residual
        elif self.shortcut == "dropout" and masks:
            shortcut = shortcut * masks.pop(0)
        if path_mask is not None:
            residual = residual * path_mask
        return shortcut + residual

    def compute_output_shape(self, input_shape):
        def out(size):
            return None if size is None else -(-size // self.strides)

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.output_filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            strides=self.strides,
            unit_variant=self.unit_variant,
            shortcut=self.shortcut,
            projection=self.projection,
            shortcut_scale=self.shortcut_scale,
            residual_scale=self.residual_scale,
            gate_bias_init=self.gate_bias_init,
            shortcut_dropout_rate=self.shortcut_dropout_rate,
            drop_path_rate=self.drop_path_rate,
            zero_init_last=self.zero_init_last,
            preactivate=self.preactivate,
            raw_projection=self.raw_projection,
            padding=self.padding,
            output_bias=self.output_bias,
            norm_epsilon=self.norm_epsilon,
            norm_momentum=self.norm_momentum,
            seed=self.seed,
            remat=self.remat,
            dilation=self.dilation,
            first_dilation=self.first_dilation,
            norm=self.norm,
            conv=self.conv,
            avg_down=self.avg_down,
        )
        return config


_COMMON_ARGS_DOC = """
    Args:
        filters: width of the unit's convolutions ({filters_doc}).
        strides: stride of the unit; it sits on the {stride_doc}.
        unit_variant: where BN and ReLU sit, one of {variants}. `"full_preact"`
            (default) is the paper's proposal, `"original"` the ResNet-v1 unit.
        shortcut: the skip connection, one of {shortcuts}.
        projection: `None` (default) projects with a 1x1 convolution exactly where
            the channel count or resolution changes; `False` keeps an identity
            shortcut on a strided unit (subsampling, as keras.applications does).
        shortcut_scale: lambda on the shortcut for `"constant_scaling"` (0.5).
        residual_scale: factor on the residual branch F for `"constant_scaling"`
            (1.0; 0.5 is the paper's "frozen gating" row).
        gate_bias_init: initial bias b_g of the 1x1 gate conv for the gating
            shortcuts (0.0; the paper's best is -6).
        shortcut_dropout_rate: rate for `shortcut="dropout"` (0.5).
        drop_path_rate: stochastic-depth probability of dropping F per sample.
        zero_init_last: initialise the last op of F (the last BN's gamma, or the
            last conv when F ends with a conv) to zero, so the unit starts as
            its shortcut.
        preactivate: `False` drops the unit's leading BN -> ReLU (fb.resnet.torch's
            `'first'` units, which follow the stem's own BN -> ReLU).
        raw_projection: the projection shortcut takes the unit's raw input and
            is followed by a BN (fb.resnet.torch's `preresnet.lua`), instead of
            taking the pre-activated tensor (the paper's appendix).
        padding: `"same"` (TensorFlow) or `"symmetric"` (PyTorch: explicit
            k//2 zero padding on strided convs, for converted weights).
        output_bias: biases on the last conv and the projection
            (keras.applications' layout).
        norm_epsilon, norm_momentum: BatchNormalization settings.
        seed: seed for stochastic depth and shortcut dropout.
        remat: rematerialise the unit in training: keep only its input for the
            backward pass and recompute its activations there
            (`keras_preact.remat.rematerialize`).
            Much less memory for deep nets at about a third more step time; the
            gradients and BN statistics are the same as without.
        dilation, first_dilation: dilation rate of the 3x3 convolutions (1):
            the unit's first 3x3 (the one a stride would sit on) takes
            `first_dilation` (default: `dilation`), the others `dilation`, as
            timm's units; with a dilation the unit's `strides` must be 1
            (`output_stride` of the ImageNet nets sets these).
        norm: `"batch"` (default), `"group"` (GroupNorm, 32 groups: BiT) or
            `"evonorm_s0"` (EvoNorm-S0, which replaces the norm and its ReLU).
        conv: `"plain"` or `"standardized"` (weight-standardised convs: BiT).
        avg_down: the projection average-pools (2x2) before a stride-1 1x1
            conv instead of subsampling (timm's 'd' nets).
"""


@keras.saving.register_keras_serializable(package="keras_preact")
class PreActBlock(_ResidualUnit):
    __doc__ = (
        """Pre-activation basic unit: BN -> ReLU -> 3x3 conv -> BN -> ReLU -> 3x3 conv, plus shortcut.

    `num_convs=1` gives the paper's 1-layer unit (BN -> ReLU -> 3x3 conv).

    Example:

    >>> x = keras.Input((32, 32, 16))
    >>> y = PreActBlock(32, strides=2)(x)         # projection shortcut
    >>> y = PreActBlock(32, unit_variant="original")(y)
    >>> y.shape
    (None, 16, 16, 32)
    """
        + _COMMON_ARGS_DOC.format(
            filters_doc="the unit outputs this many channels",
            stride_doc="first 3x3 convolution",
            variants=", ".join(UNIT_VARIANTS),
            shortcuts=", ".join(SHORTCUTS),
        )
        + "        num_convs: 2 (default) or 1 3x3 convolutions in the residual branch.\n"
    )

    expansion = 1

    def __init__(self, filters, strides=1, num_convs=2, **kwargs):
        if num_convs not in (1, 2):
            raise ValueError(f"num_convs must be 1 or 2, got {num_convs!r}.")
        self.num_convs = num_convs
        super().__init__(filters, strides=strides, **kwargs)

    def _conv_specs(self):
        return [(3, 1, i == 0) for i in range(self.num_convs)]

    def get_config(self):
        return {**super().get_config(), "num_convs": self.num_convs}


@keras.saving.register_keras_serializable(package="keras_preact")
class PreActBottleneck(_ResidualUnit):
    __doc__ = """Pre-activation bottleneck unit: BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 (4x), plus shortcut.

    Example:

    >>> x = keras.Input((56, 56, 64))
    >>> PreActBottleneck(64)(x).shape            # 64 -> 256 channels, projected
    (None, 56, 56, 256)
    """ + _COMMON_ARGS_DOC.format(
        filters_doc="bottleneck width; the unit outputs 4 x filters channels",
        stride_doc="3x3 convolution, as in fb.resnet.torch and timm",
        variants=", ".join(UNIT_VARIANTS),
        shortcuts=", ".join(SHORTCUTS),
    )

    expansion = 4
    num_convs = 3

    def _conv_specs(self):
        return [(1, 1, False), (3, 1, True), (1, self.expansion, False)]
