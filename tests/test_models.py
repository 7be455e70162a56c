"""The model zoo against exact parameter counts, keras.applications and the paper's variants."""

import inspect
import re

import keras
import numpy as np
import pytest

import keras_preact as kp
from keras_preact import preprocessing


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# Exact trainable parameters (BN gamma/beta counted, moving statistics not), as timm and
# PyTorch count them. CIFAR: without the BN parameters ResNet-164 has 1,679,034 and
# ResNet-1001 10,178,490, the paper's "1.7M" and "10.2M" (Table 3).
CIFAR_SIZES = [
    (kp.ResNet20V2, 10, 272_282),
    (kp.ResNet56V2, 10, 855_578),
    (kp.ResNet110V2, 10, 1_730_522),
    (kp.ResNet164V2, 10, 1_703_258),
    (kp.ResNet164V2, 100, 1_726_388),
]
# ImageNet: timm's resnetv2_* (no stem BN); the paper layout adds the stem BN's 2 x 64.
IMAGENET_SIZES = [  # (builder, paper layout with stem BN, timm layout)
    (kp.ResNet18V2, 11_687_848, 11_687_720),
    (kp.ResNet34V2, 21_796_008, 21_795_880),
    (kp.ResNet50V2, 25_549_480, 25_549_352),
    (kp.ResNet101V2, 44_541_608, 44_541_480),
    (kp.ResNet152V2, 60_185_256, 60_185_128),
    (kp.ResNet200V2, 64_666_280, 64_666_152),
]
# keras.applications.ResNet{50,101,152}V2(weights=None).count_params(): all parameters, BN
# moving statistics included (ResNet50V2: 25,568,360 of them trainable).
KERAS_APPLICATIONS_SIZES = [
    (kp.ResNet50V2, 25_613_800),
    (kp.ResNet101V2, 44_675_560),
    (kp.ResNet152V2, 60_380_648),
]


@pytest.mark.parametrize("builder,classes,expected", CIFAR_SIZES)
def test_cifar_parameter_counts(builder, classes, expected):
    assert trainable_params(builder(classes=classes)) == expected


def test_resnet1001_parameter_counts():
    """ResNet-1001 for CIFAR-100 and CIFAR-10, from one build (it takes seconds)."""
    total = trainable_params(kp.ResNet1001V2(classes=100))
    assert total == 10_350_836
    head = 256 + 1  # the classifier's weights and bias per class, on 256 features
    assert total - 100 * head + 10 * head == 10_327_706


# The paper and timm layouts' counts: tests/test_analysis_cost.py (test_imagenet_table_equals_spec
# builds ResNet-18, -34 and -50, basic and bottleneck units, for the cost table). The deeper
# nets' blocks are counted here: 101 and 152 in the keras layout against keras.applications,
# 200 in the fb layout from the paper layout's figure.


def test_fb_layout_parameter_counts():
    """fb.resnet.torch's preresnet.lua: the paper's count, less the norm1 of every stage-1 unit
    ('first' units), plus a BN after each of the four projections (gamma and beta)."""
    for depth, stage1_in in ((18, (64, 64)), (200, (64, 256, 256))):
        paper = dict((b.__name__, p) for b, p, _ in IMAGENET_SIZES)[f"ResNet{depth}V2"]
        widths = (64, 128, 256, 512) if depth == 18 else (256, 512, 1024, 2048)
        projected = widths if depth != 18 else widths[1:]
        expected = paper - 2 * sum(stage1_in) + 2 * sum(projected)
        model = kp.ImageNetResNetV2(depth, layout="fb")
        assert trainable_params(model) == expected
    assert expected == 64_672_808


def test_fb_layout_takes_units_without_a_pre_activation(tmp_path, rng):
    """fb's stage-1 units skip their pre-activation after its BN-ReLU stem; an 'original'
    (post-activation) unit has none to skip, and builds, saves and reloads as it is."""
    model = kp.ImageNetResNetV2(
        18, layout="fb", unit_variant="original", input_shape=(32, 32, 3), classes=4
    )
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "fb_original.keras")
    loaded = keras.models.load_model(tmp_path / "fb_original.keras")
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    assert loaded.get_layer("stage1_unit1").unit_variant == "original"


@pytest.mark.parametrize("builder,expected", KERAS_APPLICATIONS_SIZES)
def test_keras_layout_sizes_equal_keras_applications(builder, expected):
    # keras.applications normalises outside the model, so compare without the in-model step.
    assert builder(layout="keras", include_preprocessing=False).count_params() == expected


def test_keras_layout_reproduces_keras_applications(randomize_batchnorm, rng):
    """Weights copied from keras.applications give the same logits at 224 and 320."""
    reference = keras.applications.ResNet50V2(weights=None, classifier_activation=None)
    randomize_batchnorm(reference, seed=3)
    ours = kp.ResNet50V2(layout="keras", classifier_activation=None)
    assert kp.weights.copy_keras_applications_weights(reference, ours) == 103
    for size in (224, 320):
        images = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
        expected = reference.predict(
            keras.applications.resnet_v2.preprocess_input(images.copy()), verbose=0
        )
        got = ours.predict(images, verbose=0)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
        assert np.array_equal(got.argmax(-1), expected.argmax(-1))


IMAGENET_BUILDERS = [kp.ResNet18V2, kp.ResNet34V2, kp.ResNet50V2, kp.ResNet101V2]
IMAGENET_BUILDERS += [kp.ResNet152V2, kp.ResNet200V2]
CIFAR_BUILDERS = [kp.ResNet20V2, kp.ResNet32V2, kp.ResNet44V2, kp.ResNet56V2, kp.ResNet110V2]
CIFAR_BUILDERS += [kp.ResNet164V2, kp.ResNet1001V2]
APPLICATIONS_ARGS = ["include_top", "weights", "input_tensor", "input_shape", "pooling"]
APPLICATIONS_ARGS += ["classes", "classifier_activation"]


@pytest.mark.parametrize(
    "builder,general,fixed",
    [(b, kp.ImageNetResNetV2, ["depth"]) for b in IMAGENET_BUILDERS]
    + [(b, kp.CIFARResNetV2, ["depth", "unit"]) for b in CIFAR_BUILDERS],
    ids=lambda b: getattr(b, "__name__", None),
)
def test_named_builders_show_the_general_builders_arguments(builder, general, fixed):
    """`help()` and `inspect.signature` (IPython, Jupyter) list the general builder's arguments,
    but depth (and unit), and calls are checked against them."""
    named = inspect.signature(builder).parameters
    expected = {n: p.default for n, p in inspect.signature(general).parameters.items()}
    assert list(expected)[: len(fixed)] == fixed
    for name in fixed:
        del expected[name]
    assert {n: p.default for n, p in named.items()} == expected
    assert list(named) == list(expected)  # in the general builder's order
    assert {"unit_variant", "shortcut", "shortcut_scale", "gate_bias_init"} <= set(named)
    assert ("layout" in named) == (general is kp.ImageNetResNetV2)
    assert ("normalization" in named) == (general is kp.CIFARResNetV2)
    # keras.applications' arguments keep their positions; the others are keyword-only.
    kinds = {n: p.kind for n, p in named.items()}
    assert list(named)[: len(APPLICATIONS_ARGS)] == APPLICATIONS_ARGS
    assert all(kinds[n] == inspect.Parameter.POSITIONAL_OR_KEYWORD for n in APPLICATIONS_ARGS)
    assert all(
        k == inspect.Parameter.KEYWORD_ONLY for n, k in kinds.items() if n not in APPLICATIONS_ARGS
    )
    depth = builder.__name__.removeprefix("ResNet").removesuffix("V2")
    assert builder.__doc__.startswith(f"Pre-activation ResNet-{depth} for ")
    assert f"{general.__name__}({depth}, " in builder.__doc__
    with pytest.raises(TypeError, match=f"{builder.__name__}.*unexpected keyword argument 'depht'"):
        builder(depht=50)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        builder(**{fixed[-1]: 20})
    with pytest.raises(TypeError, match="too many positional arguments"):
        builder(*[None] * (len(APPLICATIONS_ARGS) + 1))


def test_general_builders_reject_unknown_arguments():
    with pytest.raises(TypeError, match="unexpected keyword argument 'shortcut_scal'"):
        kp.CIFARResNetV2(20, shortcut_scal=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'unit'"):
        kp.ImageNetResNetV2(50, unit="basic")


def test_named_builders_pass_arguments_through():
    """Positional keras.applications arguments and keyword-only options reach the net."""
    model = kp.ResNet18V2(False, None, None, (64, 64, 3), "avg", layout="timm", name="r18")
    assert model.name == "r18" and model.output.shape == (None, 512)
    assert "stem_bn" not in [layer.name for layer in model.layers]  # the timm layout
    cifar = kp.ResNet20V2(classes=3, unit_variant="original", shortcut_scale=None)
    assert cifar.name == "resnet20v2" and cifar.output.shape == (None, 3)
    assert cifar.get_layer("stage1_unit1").unit_variant == "original"


def test_paper_and_timm_layouts_place_stride_on_first_unit():
    model = kp.ResNet50V2(layout="paper", input_shape=(64, 64, 3), include_top=False)
    assert model.get_layer("stage2_unit1").strides == 2
    assert model.get_layer("stage2_unit1").conv2.strides == (2, 2)  # on the 3x3
    assert model.get_layer("stem_bn") is not None
    keras_layout = kp.ResNet50V2(layout="keras", input_shape=(64, 64, 3), include_top=False)
    assert keras_layout.get_layer("stage1_unit3").strides == 2
    assert keras_layout.get_layer("stage1_unit3").projection is False
    assert keras_layout.output.shape == model.output.shape == (None, 2, 2, 2048)


def test_paper_layout_pads_strided_ops_symmetrically_like_the_authors_torch_code(
    rng, randomize_batchnorm
):
    """Stem conv (pad 3), max-pool (pad 1, -inf) and the strided 3x3 (pad 1) as in Torch.

    TensorFlow's "same" pads 0 before and 1 after on even sizes; these checks fail with it.
    """
    import tensorflow as tf
    from foreign_nets import _conv_tf, _max_pool_tf

    model = randomize_batchnorm(kp.ResNet18V2(include_preprocessing=False, classes=5), seed=2)
    images = rng.normal(size=(2, 64, 64, 3)).astype("float32")

    def output(name, inputs=model.inputs):
        return keras.Model(inputs, model.get_layer(name).output)

    def oihw(conv):
        return np.transpose(conv.kernel.numpy(), (3, 2, 0, 1))

    stem = output("stem_conv")(images)
    np.testing.assert_allclose(
        stem, _conv_tf(images, oihw(model.get_layer("stem_conv")), 2, 2, 3, 3), atol=1e-4
    )
    stem_relu = output("stem_relu")(images)
    np.testing.assert_array_equal(
        output("stem_pool")(images), _max_pool_tf(stem_relu, 3, 3, 2, 2, 1, 1)
    )
    # The strided 3x3 of the first unit of stage 2, on its pre-activated input.
    unit = model.get_layer("stage2_unit1")
    preact = tf.nn.relu(unit.norm1(output("stage1_unit2")(images), training=False))
    np.testing.assert_allclose(
        unit.conv1(unit.conv1_pad(preact)),
        _conv_tf(preact, oihw(unit.conv1), 2, 2, 1, 1),
        atol=1e-4,
    )


# Each row of the paper's Tables 1 and 2 as (unit_variant, shortcut, options), plus the
# modern options, on a tiny CIFAR net.
VARIANTS = [
    ("original", "identity", {}),
    ("bn_after_addition", "identity", {}),
    ("relu_before_addition", "identity", {}),
    ("relu_only_preact", "identity", {}),
    ("full_preact", "identity", {}),
    ("original", "constant_scaling", {"shortcut_scale": 0.5, "residual_scale": 0.5}),
    ("original", "exclusive_gating", {"gate_bias_init": -6.0}),
    ("original", "shortcut_only_gating", {"gate_bias_init": -6.0}),
    ("original", "conv1x1", {}),
    ("original", "dropout", {"shortcut_dropout_rate": 0.5}),
    ("full_preact", "constant_scaling", {}),
    ("full_preact", "exclusive_gating", {}),
    ("full_preact", "conv1x1", {}),
    ("full_preact", "identity", {"zero_init_last": True, "drop_path_rate": 0.2}),
]


# Every variant on basic units; bottleneck and 1-layer units on two representative ones.
UNIT_CASES = [("basic", *v) for v in VARIANTS] + [
    (unit, *VARIANTS[i]) for unit in ("bottleneck", "one_layer") for i in (4, 6)
]


@pytest.mark.parametrize("unit,unit_variant,shortcut,options", UNIT_CASES)
def test_variant_trains_and_round_trips(unit, unit_variant, shortcut, options, tmp_path, rng):
    depth = {"basic": 8, "bottleneck": 11, "one_layer": 5}[unit]
    model = kp.CIFARResNetV2(
        depth,
        unit,
        width=4,
        input_shape=(16, 16, 3),
        unit_variant=unit_variant,
        shortcut=shortcut,
        seed=5,
        **options,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    images = rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 10, 8)
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    changed = {
        w.path: not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)
    }
    if options.get("zero_init_last"):
        # F's last conv starts at zero, so only it (and what bypasses F) moves on step one:
        # the gradient reaching each unit's first conv passes through that zero kernel.
        initial = {w.path: b for b, w in zip(before, model.trainable_weights)}
        last = [p for p in initial if re.fullmatch(r"stage\d_unit\d+/conv2/kernel", p)]
        first = [p for p in initial if re.fullmatch(r"stage\d_unit\d+/conv1/kernel", p)]
        assert len(last) == len(first) == 3  # ResNet-8: three units
        assert all(not initial[p].any() for p in last)  # ignored, they start random
        assert all(changed[p] for p in last)
        assert not any(changed[p] for p in first), [p for p in first if changed[p]]
    else:
        assert sum(changed.values()) >= len(changed) * 0.9  # nearly every weight stepped

    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(
        restored.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    assert (
        restored.get_layer("stage2_unit1").get_config()
        == model.get_layer("stage2_unit1").get_config()
    )


def test_one_layer_resnet110_has_36_units_per_stage():
    model = kp.CIFARResNetV2(110, "one_layer")
    units = [layer for layer in model.layers if isinstance(layer, kp.PreActBlock)]
    assert len(units) == 108 and all(u.num_convs == 1 for u in units)
    convs = [w for w in model.trainable_weights if w.path.endswith("kernel") and len(w.shape) == 4]
    # 110 weighted layers = stem conv + 108 unit convs + FC; plus 2 projections.
    assert len(convs) == 1 + 108 + 2


@pytest.mark.parametrize("layout", ["paper", "timm", "keras"])
def test_include_preprocessing_equals_preprocess_input(layout, rng):
    raw = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    with_pre = kp.ResNet18V2(layout=layout, classes=7)
    without = kp.ResNet18V2(layout=layout, classes=7, include_preprocessing=False)
    for layer in without.layers:
        layer.set_weights(with_pre.get_layer(layer.name).get_weights())
    normalization = kp.LAYOUTS[layout].normalization
    np.testing.assert_allclose(
        with_pre.predict(raw, verbose=0),
        without.predict(kp.preprocess_input(raw, normalization), verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_preprocess_input_values():
    pixel = np.array([[[[0.0, 127.5, 255.0]]]], "float32")
    np.testing.assert_allclose(kp.preprocess_input(pixel, "tf"), [[[[-1.0, 0.0, 1.0]]]])
    torch = kp.preprocess_input(pixel, "torch")
    expected = (pixel / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(torch, expected, rtol=1e-5)


def test_fully_convolutional_any_size(rng, randomize_batchnorm):
    """At every size the head is softmax(mean over H and W of the features @ W + b), and at
    odd sizes the any-size model answers as the model built for that size, with its weights."""
    model = randomize_batchnorm(kp.ResNet18V2(classes=5), seed=4)
    features = keras.Model(model.input, model.get_layer("post_relu").output)
    kernel, bias = model.get_layer("predictions").get_weights()
    for height, width in [(32, 32), (57, 91), (320, 320)]:
        images = rng.uniform(0, 255, (1, height, width, 3)).astype("float32")
        out = np.asarray(model(images, training=False))
        assert out.shape == (1, 5)
        logits = np.asarray(features(images, training=False), "float64").mean(axis=(1, 2))
        logits = logits @ kernel + bias
        softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(out, softmax, rtol=1e-4, atol=1e-6)
        if (height, width) == (57, 91):
            fixed = kp.ResNet18V2(classes=5, input_shape=(height, width, 3))
            fixed.set_weights(model.get_weights())
            expected = np.asarray(fixed(images, training=False))
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_pooling_and_feature_outputs():
    assert kp.ResNet18V2(include_top=False, pooling="avg").output.shape == (None, 512)
    assert kp.ResNet20V2(include_top=False, pooling="max").output.shape == (None, 64)
    assert kp.ResNet50V2(include_top=False, input_shape=(224, 224, 3)).output.shape == (
        None,
        7,
        7,
        2048,
    )


def test_decode_predictions_and_class_list():
    classes = kp.imagenet_classes()
    assert len(classes) == 1000
    wnids = [wnid for wnid, _ in classes]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000  # tfds order: sorted synsets
    assert classes[0] == ("n01440764", "tench") and classes[999][0] == "n15075141"
    preds = np.zeros((2, 1000), "float32")
    preds[0, [3, 7]] = [0.9, 0.1]
    preds[1, 999] = 1.0
    decoded = kp.decode_predictions(preds, top=2)
    assert decoded[0][0] == ("n01491361", "tiger shark", pytest.approx(0.9))
    assert decoded[0][1][:2] == classes[7]
    assert decoded[1][0][:2] == classes[999]
    with pytest.raises(ValueError, match=r"\(samples, 1000\)"):
        kp.decode_predictions(np.zeros((1, 10)))
    assert preprocessing.normalization_stats("cifar10")[0].shape == (3,)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: kp.CIFARResNetV2(165, "bottleneck"), r"9n\+2.*164"),
        (lambda: kp.CIFARResNetV2(21), r"6n\+2"),
        (lambda: kp.CIFARResNetV2(20, "wide"), "'basic', 'one_layer'|'basic'"),
        (lambda: kp.ImageNetResNetV2(42), "18, 34, 50, 101, 152, 200"),
        (lambda: kp.ResNet20V2(unit_variant="preact_full"), "'full_preact'"),
        (lambda: kp.ResNet18V2(shortcut="gating"), "'exclusive_gating'"),
        (lambda: kp.ResNet18V2(layout="torchvision"), "'paper', 'timm', 'keras'"),
        (lambda: kp.ResNet18V2(input_shape=(16, 16, 3)), ">= 32"),
        (lambda: kp.ResNet18V2(input_shape=(224, 224, 0)), "known, positive channel count"),
        (lambda: kp.ResNet20V2(input_shape=(32, 32)), r"\(height, width, channels\)"),
        (lambda: kp.ResNet20V2(weights="imagenet"), "CIFAR nets have no public pretrained"),
        (lambda: kp.ResNet50V2(weights="fb:resnet-200"), "ResNet-200 weights; this model is"),
        (lambda: kp.ResNet50V2(weights="keras:resnet50v2", layout="timm"), "need layout='keras'"),
        (lambda: kp.ResNet50V2(weights="timm:nope"), "Unknown weights source 'timm:nope'"),
        (lambda: kp.ResNet50V2(weights="imagenet", shortcut="conv1x1"), "full pre-activation"),
        (lambda: kp.ResNet20V2(weights="missing.weights.h5"), "not found"),
        (lambda: kp.ResNet20V2(weights="model.h5"), "Weights file not found: 'model.h5'"),
        (lambda: kp.ResNet18V2(pooling="mean", include_top=False), "pooling"),
        (lambda: kp.ResNet20V2(shortcut_scale=0.5), "constant_scaling"),
    ],
)
def test_bad_arguments_raise_clear_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_projection_gradient_at_64px_does_not_crash():
    """Strided 1x1 convs run as subsample + conv: TF 2.21's oneDNN filter gradient of a
    strided 1x1 conv aborts the process at 64x64 inputs, so train in a child process."""
    import subprocess
    import sys

    script = (
        "import keras, numpy as np, keras_preact as kp\n"
        "m = kp.CIFARResNetV2(8, width=8, input_shape=(64, 64, 3))\n"
        "m.compile(optimizer='sgd', loss='sparse_categorical_crossentropy')\n"
        "x = np.random.rand(14, 64, 64, 3).astype('float32') * 255\n"
        "for _ in range(3): m.train_on_batch(x, np.arange(14) % 10)\n"
        "print('trained')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]
