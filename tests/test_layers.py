"""The residual units against stock-Keras references and the paper's propagation equations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_preact import PreActBlock, PreActBottleneck, SymmetricMaxPooling2D
from keras_preact.layers import UNIT_VARIANT_FACTS, UNIT_VARIANTS


def _copy(dst, src):
    dst.set_weights(src.get_weights())


def _built(layer, source):
    """A stock Keras layer built like `source` and holding its weights."""
    layer.build(_in_shape(source))
    _copy(layer, source)
    return layer


def _in_shape(source):
    weights = source.get_weights()
    if isinstance(source, keras.layers.Conv2D):
        return (None, None, None, weights[0].shape[2])
    return (None, None, None, weights[0].shape[0])


def _bn(x, layer):
    return layer(x, training=False)


@pytest.mark.parametrize("strides,in_ch,out_ch", [(1, 8, 8), (2, 8, 16)])
def test_original_unit_is_resnet_v1(strides, in_ch, out_ch, rng, randomize_batchnorm):
    """unit_variant='original' is He et al. 2015's unit: conv-BN-ReLU-conv-BN, add, ReLU."""
    x = keras.Input((12, 12, in_ch))
    unit = PreActBlock(out_ch, strides=strides, unit_variant="original")
    model = randomize_batchnorm(keras.Model(x, unit(x)), seed=1)

    inputs = rng.normal(size=(2, 12, 12, in_ch)).astype("float32")
    conv1 = _built(
        keras.layers.Conv2D(out_ch, 3, strides=strides, padding="same", use_bias=False), unit.conv1
    )
    bn1 = _built(keras.layers.BatchNormalization(epsilon=1e-5), unit.norm1)
    conv2 = _built(keras.layers.Conv2D(out_ch, 3, padding="same", use_bias=False), unit.conv2)
    bn2 = _built(keras.layers.BatchNormalization(epsilon=1e-5), unit.norm2)
    r = _bn(conv2(keras.ops.relu(_bn(conv1(inputs), bn1))), bn2)
    if strides == 1:
        shortcut = inputs
    else:  # option B: 1x1 conv + BN projection
        proj = _built(
            keras.layers.Conv2D(out_ch, 1, strides=strides, use_bias=False), unit.downsample
        )
        proj_bn = _built(keras.layers.BatchNormalization(epsilon=1e-5), unit.downsample_norm)
        shortcut = _bn(proj(inputs), proj_bn)
    expected = keras.ops.relu(shortcut + r)
    np.testing.assert_allclose(model(inputs, training=False), expected, rtol=1e-5, atol=1e-5)


def test_full_preact_bottleneck_matches_stock_layers(rng, randomize_batchnorm):
    """Full pre-activation bottleneck with stride: shared BN-ReLU, projection on the pre-activated tensor."""
    x = keras.Input((10, 10, 16))
    unit = PreActBottleneck(8, strides=2)
    model = randomize_batchnorm(keras.Model(x, unit(x)), seed=2)
    inputs = rng.normal(size=(2, 10, 10, 16)).astype("float32")

    def bn(src):
        layer = _built(keras.layers.BatchNormalization(epsilon=1e-5), src)
        return lambda t: _bn(t, layer)

    def conv(src, k, s):
        filters = src.get_weights()[0].shape[-1]
        return _built(
            keras.layers.Conv2D(filters, k, strides=s, padding="same", use_bias=False), src
        )

    relu = keras.ops.relu
    preact = relu(bn(unit.norm1)(inputs))
    r = conv(unit.conv1, 1, 1)(preact)
    r = conv(unit.conv2, 3, 2)(relu(bn(unit.norm2)(r)))
    r = conv(unit.conv3, 1, 1)(relu(bn(unit.norm3)(r)))
    shortcut = conv(unit.downsample, 1, 2)(preact)
    np.testing.assert_allclose(model(inputs, training=False), shortcut + r, rtol=1e-5, atol=1e-5)
    assert model.output.shape == (None, 5, 5, 32)


def _stack(num_units, channels=8, **unit_kwargs):
    x = keras.Input((6, 6, channels))
    y = x
    for i in range(num_units):
        y = PreActBlock(channels, zero_init_last=True, name=f"unit{i}", **unit_kwargs)(y)
    return keras.Model(x, y)


@pytest.mark.parametrize("training", [False, True])
def test_propagation_equations(training, rng):
    """Eqs. (6), (7), (9) with every F = 0 at initialisation (zero_init_last)."""
    num_units = 5
    x_l = rng.normal(size=(3, 6, 6, 8)).astype("float32")
    # Eq. (6)/(7): full pre-activation units pass x_l through unchanged.
    full = _stack(num_units)
    np.testing.assert_array_equal(full(x_l, training=training), x_l)
    # Original units: x_{l+1} = ReLU(x_l + F) = ReLU(x_l), idempotent.
    original = _stack(num_units, unit_variant="original")
    np.testing.assert_array_equal(original(x_l, training=training), np.maximum(x_l, 0))
    # Eq. (9)-style scaling: x_L = lambda^(L-l) x_l with constant_scaling lambda = 0.5.
    scaled = _stack(num_units, shortcut="constant_scaling", shortcut_scale=0.5)
    np.testing.assert_allclose(
        scaled(x_l, training=training), 0.5**num_units * x_l, rtol=1e-6, atol=0
    )


def test_identity_gradient_of_full_preact_stack(rng):
    """dx_L/dx_l is the identity for full pre-activation units (Eq. 5 with F = 0)."""
    model = _stack(4, channels=2)
    x_l = tf.constant(rng.normal(size=(1, 6, 6, 2)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x_l)
        x_L = model(x_l, training=False)
    jacobian = tape.jacobian(x_L, x_l).numpy().reshape(72, 72)
    np.testing.assert_array_equal(jacobian, np.eye(72, dtype="float32"))
    # A control that can fail: without zero_init_last the Jacobian is not the identity.
    x = keras.Input((6, 6, 2))
    plain = keras.Model(x, PreActBlock(2)(x))
    with tf.GradientTape() as tape:
        tape.watch(x_l)
        y = plain(x_l, training=False)
    assert np.abs(tape.jacobian(y, x_l).numpy().reshape(72, 72) - np.eye(72)).max() > 1e-3


def test_exclusive_gating_formula(rng):
    """(1 - g) * x + g * F with g = sigmoid(conv1x1(x) + b_g)."""
    x = keras.Input((5, 5, 4))
    unit = PreActBlock(4, shortcut="exclusive_gating", gate_bias_init=-6.0)
    model = keras.Model(x, unit(x))
    np.testing.assert_array_equal(unit.gate.bias.numpy(), np.full(4, -6.0, "float32"))
    inputs = rng.normal(size=(2, 5, 5, 4)).astype("float32")
    gate = keras.ops.sigmoid(unit.gate(inputs))
    preact = keras.ops.relu(unit.norm1(inputs, training=False))
    f = unit.conv2(keras.ops.relu(unit.norm2(unit.conv1(preact), training=False)))
    expected = (1.0 - gate) * inputs + gate * f
    np.testing.assert_allclose(model(inputs, training=False), expected, rtol=1e-5, atol=1e-6)
    assert float(np.median(gate)) < 0.05  # b_g = -6 keeps the gate mostly closed


def test_drop_path_drops_whole_samples(rng):
    x = keras.Input((4, 4, 3))
    unit = PreActBlock(3, drop_path_rate=0.5, seed=7)
    model = keras.Model(x, unit(x))
    inputs = rng.normal(size=(64, 4, 4, 3)).astype("float32")
    preact = keras.ops.relu(unit.norm1(inputs, training=True))
    f = unit.conv2(keras.ops.relu(unit.norm2(unit.conv1(preact), training=True)))
    out = model(inputs, training=True).numpy()
    kept = np.all(np.isclose(out, inputs + 2.0 * f.numpy(), atol=1e-4), axis=(1, 2, 3))
    dropped = np.all(np.isclose(out, inputs, atol=1e-6), axis=(1, 2, 3))
    assert np.all(kept ^ dropped)
    assert 10 < dropped.sum() < 54  # about half of 64
    np.testing.assert_allclose(
        model(inputs, training=False),
        inputs
        + unit.conv2(keras.ops.relu(unit.norm2(unit.conv1(keras.ops.relu(unit.norm1(inputs)))))),
        atol=1e-5,
    )


def test_symmetric_max_pool_matches_numpy(rng):
    inputs = rng.normal(size=(1, 7, 8, 2)).astype("float32")
    out = SymmetricMaxPooling2D(3, 2, 1)(inputs).numpy()
    padded = np.pad(inputs, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
    expected = np.stack(
        [
            np.stack(
                [padded[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(0, 1)) for j in range(4)]
            )
            for i in range(4)
        ]
    )[None]
    np.testing.assert_array_equal(out, expected)


def test_units_serialize_and_work_in_sequential(rng):
    unit = PreActBottleneck(
        4,
        strides=2,
        unit_variant="relu_only_preact",
        shortcut="shortcut_only_gating",
        gate_bias_init=-6.0,
    )
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(unit))
    assert clone.get_config() == unit.get_config()
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), PreActBlock(4), PreActBottleneck(2, strides=2)]
    )
    assert model.output_shape == (None, 4, 4, 8)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"unit_variant": "preact"}, "unit_variant.*'full_preact'"),
        ({"shortcut": "gated"}, "shortcut.*'exclusive_gating'"),
        ({"shortcut_scale": 0.5}, "shortcut_scale applies only to shortcut='constant_scaling'"),
        ({"padding": "reflect"}, "padding"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ],
)
def test_bad_unit_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PreActBlock(8, **kwargs)


def test_identity_shortcut_cannot_change_channels():
    with pytest.raises(ValueError, match="cannot map 8 to 16 channels"):
        PreActBlock(16, projection=False)(keras.Input((4, 4, 8)))


def test_unit_variant_facts_agree_with_each_other():
    """Fig. 4: a unit whose sum is activated needs no final BN-ReLU; post-activation units
    are those without a pre-activation; only (e) starts with a BN."""
    assert UNIT_VARIANTS == tuple(UNIT_VARIANT_FACTS)
    for variant, facts in UNIT_VARIANT_FACTS.items():
        assert facts.final_norm == (not facts.output_relu), variant
        assert facts.post_activation == (not facts.preact_relu), variant
        assert not facts.output_norm or facts.output_relu, variant  # (b): BN -> ReLU
        assert not facts.branch_relu or facts.ends_with_norm, variant  # (c): BN -> ReLU
    assert [v for v, f in UNIT_VARIANT_FACTS.items() if f.preact_norm] == ["full_preact"]
    assert [v for v, f in UNIT_VARIANT_FACTS.items() if f.final_norm] == [
        "relu_before_addition",
        "relu_only_preact",
        "full_preact",
    ]


def _stock_conv(source, kernel_size, strides=1, use_bias=False):
    filters = source.get_weights()[0].shape[-1]
    return _built(
        keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same", use_bias=use_bias
        ),
        source,
    )


def _stock_bn(source):
    layer = _built(keras.layers.BatchNormalization(epsilon=1e-5), source)
    return lambda t: _bn(t, layer)


def _reference_block(unit, x, variant, shortcut, strides, projects):
    """The basic unit written out from the paper with stock Keras layers and the unit's weights.

    Fig. 4 (F is the residual branch; the BN between the convs is `norm1`, except in (e),
    where `norm1` is the leading BN):
      (a) original:                 conv-BN-ReLU-conv-BN, add, ReLU
      (b) BN after addition:        conv-BN-ReLU-conv, add, BN-ReLU
      (c) ReLU before addition:     conv-BN-ReLU-conv-BN-ReLU, add
      (d) ReLU-only pre-activation: ReLU-conv-BN-ReLU-conv-BN, add
      (e) full pre-activation:      BN-ReLU-conv-BN-ReLU-conv, add
    Fig. 2 shortcuts: g = sigmoid(1x1 conv(x) + b_g); exclusive gating (1 - g) * h(x) + g * F,
    shortcut-only gating (1 - g) * h(x) + F; conv1x1 a 1x1 conv h on every unit. A projection
    takes the pre-activated tensor (the appendix) and is conv + BN for the post-activation
    units (a)-(c), as in ResNet-v1.
    """
    relu = keras.layers.ReLU()
    conv1 = _stock_conv(unit.conv1, 3, strides)
    conv2 = _stock_conv(unit.conv2, 3)

    def bn(attr):
        return _stock_bn(getattr(unit, attr))

    preact = x
    if variant == "original":
        f = bn("norm2")(conv2(relu(bn("norm1")(conv1(x)))))
    elif variant == "bn_after_addition":
        f = conv2(relu(bn("norm1")(conv1(x))))
    elif variant == "relu_before_addition":
        f = relu(bn("norm2")(conv2(relu(bn("norm1")(conv1(x))))))
    elif variant == "relu_only_preact":
        preact = relu(x)
        f = bn("norm2")(conv2(relu(bn("norm1")(conv1(preact)))))
    elif variant == "full_preact":
        preact = relu(bn("norm1")(x))
        f = conv2(relu(bn("norm2")(conv1(preact))))
    else:
        raise AssertionError(variant)
    post_activation = variant in ("original", "bn_after_addition", "relu_before_addition")
    h = x
    if projects:
        h = _stock_conv(unit.downsample, 1, strides)(preact)
        if post_activation:
            h = bn("downsample_norm")(h)
    if shortcut in ("exclusive_gating", "shortcut_only_gating"):
        assert not projects  # the gate sees the raw input x here
        gate_conv = _stock_conv(unit.gate, 1, use_bias=True)
        g = keras.activations.sigmoid(gate_conv(x))
        out = (1.0 - g) * h + (g * f if shortcut == "exclusive_gating" else f)
    else:
        out = h + f
    if variant == "bn_after_addition":
        out = relu(bn("output_norm")(out))
    if variant == "original":
        out = relu(out)
    return out


# (unit_variant, shortcut, strides, output channels) on 8 input channels: each Fig. 4 unit
# with an identity shortcut and with a strided projection; each gating and the 1x1-conv
# shortcut on every unit.
_REFERENCE_CASES = (
    [(v, "identity", 1, 8) for v in UNIT_VARIANTS]
    + [(v, "identity", 2, 16) for v in UNIT_VARIANTS]
    + [(v, s, 1, 8) for s in ("exclusive_gating", "shortcut_only_gating") for v in UNIT_VARIANTS]
    + [(v, "conv1x1", 1, 8) for v in UNIT_VARIANTS]
)


@pytest.mark.parametrize("variant,shortcut,strides,out_ch", _REFERENCE_CASES)
def test_unit_matches_the_paper_in_stock_keras_layers(
    variant, shortcut, strides, out_ch, rng, randomize_batchnorm
):
    """Every Fig. 4 unit and Fig. 2 shortcut against `_reference_block`, BN statistics random."""
    options = {"gate_bias_init": -1.0} if "gating" in shortcut else {}
    x = keras.Input((8, 8, 8))
    unit = PreActBlock(out_ch, strides=strides, unit_variant=variant, shortcut=shortcut, **options)
    model = randomize_batchnorm(keras.Model(x, unit(x)), seed=3)
    projects = strides != 1 or shortcut == "conv1x1"
    assert unit.projects == projects
    inputs = rng.normal(size=(2, 8, 8, 8)).astype("float32")
    expected = _reference_block(unit, inputs, variant, shortcut, strides, projects)
    got = model(inputs, training=False)
    assert got.shape == (2, 8 // strides, 8 // strides, out_ch)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("unit_class", [PreActBlock, PreActBottleneck])
@pytest.mark.parametrize("variant", UNIT_VARIANTS)
def test_zero_init_last_starts_each_unit_as_its_shortcut(unit_class, variant, rng):
    """zero_init_last zeroes F's last op: the last BN's gamma for (a), (c), (d), the last conv's
    kernel for (b), (e). At initialisation the unit then computes its shortcut alone, exactly:
    x, ReLU(x) for (a), BN-ReLU(x) for (b); without the option it does not."""
    channels = 8 * unit_class.expansion
    x = keras.Input((6, 6, channels))
    units = {
        zero: unit_class(8, unit_variant=variant, zero_init_last=zero) for zero in (True, False)
    }
    models = {zero: keras.Model(x, unit(x)) for zero, unit in units.items()}
    inputs = rng.normal(size=(2, 6, 6, channels)).astype("float32")
    if variant == "original":
        expected = np.maximum(inputs, 0)
    elif variant == "bn_after_addition":
        expected = keras.ops.relu(units[True].output_norm(inputs, training=False)).numpy()
    else:
        expected = inputs
    for training in (False, True):
        if variant == "bn_after_addition" and training:
            continue  # its output BN normalises with the batch's statistics
        np.testing.assert_array_equal(models[True](inputs, training=training), expected)
    assert np.abs(models[False](inputs, training=False) - expected).max() > 1e-2
    last = "conv3" if unit_class is PreActBottleneck else "conv2"  # F's last conv
    zeroed = {
        "original": "norm",
        "bn_after_addition": "conv",
        "relu_before_addition": "norm",
        "relu_only_preact": "norm",
        "full_preact": "conv",
    }[variant]
    for zero, unit in units.items():
        kernel = getattr(unit, last).kernel.numpy()
        gammas = [
            layer.gamma.numpy()
            for layer in unit._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)
        ]
        zero_gammas = sum(not g.any() for g in gammas)
        if zero and zeroed == "conv":
            assert not kernel.any() and zero_gammas == 0
        elif zero:
            assert kernel.any() and zero_gammas == 1
        else:
            assert kernel.any() and zero_gammas == 0


def _training_step(model, images, labels):
    """One traced training step's loss, gradients, BN statistics after it, and its graph."""

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            )
        return loss, tape.gradient(loss, model.trainable_variables)

    graph = step.get_concrete_function().graph
    loss, grads = step()
    statistics = [v.numpy() for v in model.non_trainable_variables if "moving" in v.path]
    return float(loss), [g.numpy() for g in grads], statistics, graph


def _conv_ops(graph):
    count = sum(op.type == "Conv2D" for op in graph.get_operations())
    for function in graph._functions.values():  # the recomputation runs in gradient functions
        count += sum(op.type == "Conv2D" for op in function.graph.get_operations())
    return count


@pytest.mark.parametrize(
    "options",
    [{"drop_path_rate": 0.5, "seed": 3}, {"shortcut": "dropout", "seed": 5}],
    ids=["drop_path", "shortcut_dropout"],
)
def test_remat_gives_the_plain_gradients_and_batchnorm_statistics(
    options, rng, randomize_batchnorm
):
    """remat=True recomputes each unit in the backward pass: same loss, gradients, BN updates.

    The random masks (stochastic depth, shortcut dropout) must be the same in both runs of
    a unit, and the second run must not move the BN statistics again.
    """
    from keras_preact import CIFARResNetV2

    images = rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    labels = np.arange(8) % 10
    results = {}
    for remat in (False, True):
        keras.utils.set_random_seed(0)
        model = CIFARResNetV2(
            11,
            "bottleneck",
            input_shape=(16, 16, 3),
            classifier_activation=None,
            remat=remat,
            **options,
        )
        randomize_batchnorm(model, seed=1)
        results[remat] = _training_step(model, images, labels)
    (loss, grads, stats, graph), (r_loss, r_grads, r_stats, r_graph) = results[False], results[True]
    assert r_loss == loss
    for plain, rematerialised in zip(grads, r_grads):  # measured: identical
        scale = np.max(np.abs(plain)) + 1e-12
        assert np.max(np.abs(rematerialised - plain)) / scale <= 1e-6
    for plain, rematerialised in zip(stats, r_stats, strict=True):
        np.testing.assert_allclose(rematerialised, plain, rtol=1e-6, atol=1e-7)
    # The units' convolutions run again in the backward pass: 3 units of 3 convs and a projection.
    assert _conv_ops(r_graph) - _conv_ops(graph) == 12


def test_remat_is_a_training_setting_that_serializes_and_leaves_inference_alone(rng):
    from keras_preact import CIFARResNetV2
    from keras_preact.models.float32 import float32_copy

    keras.utils.set_random_seed(0)
    model = CIFARResNetV2(8, width=4, remat=True)
    unit = model.get_layer("stage1_unit1")
    assert unit.remat and unit.get_config()["remat"] is True
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(unit)).remat
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    copy = float32_copy(model)
    assert not copy.get_layer("stage1_unit1").remat  # what is saved and exported
    np.testing.assert_array_equal(copy(images), model(images))


def _fused_ops(fn, *args):
    graph = tf.function(fn).get_concrete_function(*args).graph
    return sum(op.type.startswith("FusedBatchNorm") for op in graph.get_operations())


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_fused_batchnorm_trains_like_keras_batchnorm(policy, rng):
    """FusedBatchNormalization: Keras BatchNormalization's numbers, through one fused kernel.

    Outputs, gradients and the moving statistics (Keras' momentum convention, biased
    variance) against the stock layer with random statistics, in training and inference.
    """
    from keras_preact.normalization import FusedBatchNormalization

    shape = (4, 5, 6, 3)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype("float32"))
    weighting = tf.constant(rng.normal(size=shape).astype("float32"))
    stock = keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-5, dtype=policy)
    fused = FusedBatchNormalization(momentum=0.8, epsilon=1e-5, dtype=policy)
    stock.build(shape)
    fused.build(shape)
    values = [rng.uniform(0.5, 1.5, v.shape).astype("float32") for v in stock.weights]
    stock.set_weights(values)
    fused.set_weights(values)

    def step(layer, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") * weighting)
        return (y, *tape.gradient(loss, [x, *layer.trainable_weights]))

    tolerance = 1e-5 if policy == "float32" else 1e-2
    expected_step = step(stock, x)
    for expected, got in zip(expected_step, step(fused, x), strict=True):
        assert got.dtype == expected.dtype
        expected, got = (tf.cast(t, "float32").numpy() for t in (expected, got))
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
    for expected, got in zip(stock.weights, fused.weights, strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
    assert _fused_ops(lambda t: fused(t, training=True), x) == 1
    assert _fused_ops(lambda t: stock(t, training=True), x) == 0

    # The second run of a rematerialised unit: batch statistics, moving ones untouched.
    moving = [w.numpy() for w in fused.weights[2:]]
    np.testing.assert_allclose(
        tf.cast(fused.normalize_with_batch_statistics(x), "float32"),
        tf.cast(expected_step[0], "float32"),
        rtol=tolerance,
        atol=tolerance,
    )
    for before, after in zip(moving, fused.weights[2:], strict=True):
        np.testing.assert_array_equal(after.numpy(), before)

    # Inference, and a frozen layer in training (Keras 3: the moving statistics), run the
    # fused kernel with the moving statistics; cross-replica statistics are Keras' call.
    fused.set_weights(stock.get_weights())
    expected = tf.cast(stock(x, training=False), "float32")
    for training in (False, True):
        fused.trainable = training is False
        assert _fused_ops(lambda t, training=training: fused(t, training=training), x) == 1
        got = tf.cast(fused(x, training=training), "float32")
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(fused.weights[2].numpy(), stock.weights[2].numpy())
    fused.trainable, fused.synchronized = True, True
    assert _fused_ops(lambda t: fused(t, training=True), x) == 0
    assert _fused_ops(lambda t: fused(t, training=False), x) == 0

    config = keras.saving.serialize_keras_object(fused)
    assert type(keras.saving.deserialize_keras_object(config)) is FusedBatchNormalization


@pytest.mark.parametrize("projection", [None, False])
def test_strided_shortcuts_subsample_by_max_pool_or_slice_to_the_same_values(projection):
    """TensorFlow graphs subsample a strided shortcut with a 1x1 max-pool (faster); inside
    `subsample_by_slicing` (TFLite's conversion source) with a strided slice: same outputs."""
    from keras_preact.layers import subsample_by_slicing

    keras.utils.set_random_seed(0)
    unit = PreActBlock(16 if projection is None else 8, strides=2, projection=projection)
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 8)).astype("float32")

    def traced_ops():
        function = tf.function(lambda t: unit(t, training=False))
        graph = function.get_concrete_function(tf.TensorSpec(x.shape)).graph
        ops = {op.type for op in graph.get_operations()}
        return ops, function(x).numpy()

    pooled_ops, pooled = traced_ops()
    with subsample_by_slicing(unit):
        sliced_ops, sliced = traced_ops()
    assert "MaxPool" in pooled_ops and "StridedSlice" not in pooled_ops
    assert "StridedSlice" in sliced_ops and "MaxPool" not in sliced_ops
    np.testing.assert_array_equal(pooled, sliced)
    assert not unit._subsample_by_slicing  # back to the max-pool after the block
