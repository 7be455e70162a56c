"""The ImageNet nets as backbones: pyramid outputs, output stride, any number of input channels.

The reference is timm's graph written out in `foreign_nets` (`timm_features`:
`features_only=True` taps, `output_stride` dilation, read from timm's
`resnetv2.py`) on a random timm state dict with calibrated, random BN
statistics; channel adaptation is timm's `adapt_input_conv`, written out here.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from foreign_nets import timm_features, timm_state_dict
from safetensors.numpy import save_file

import keras_preact as kp
from keras_preact.models.common import plan_units


def _close(got, expected, rtol=1e-4):
    got, expected = np.asarray(got), np.asarray(expected)
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    def write(depth):
        path = tmp_path_factory.mktemp("timm") / f"resnetv2_{depth}.safetensors"
        state = timm_state_dict(depth, np.random.default_rng(depth))
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
        return str(path), state

    return {18: write(18), 50: write(50)}


def _images(channels=3, size=64):
    return np.random.default_rng(3).uniform(0, 255, (2, size, size, channels)).astype("float32")


@pytest.mark.parametrize("depth,output_stride", [(18, None), (18, 16), (18, 8), (50, 16)])
def test_pyramid_and_output_stride_equal_timm_features(timm_file, depth, output_stride):
    path, state = timm_file[depth]
    model = kp.ImageNetResNetV2(
        depth, weights=path, output_stride=output_stride, classifier_activation=None
    )
    extractor = keras.Model(model.inputs, [model.output, model.pyramid_outputs])
    images = _images()
    logits, taps = extractor(images)
    want_taps, want_logits = timm_features(state, images / 127.5 - 1.0, output_stride or 32)
    assert list(taps) == ["P1", "P2", "P3", "P4", "P5"]
    for level, want in zip(taps, want_taps):
        assert taps[level].shape == want.shape, level
        _close(taps[level], want)
    _close(logits, want_logits)
    assert model.get_config()["output_stride"] == (output_stride or 32)


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_pretrained_stem_adapts_to_any_channel_count_as_timm(timm_file, channels, capfd):
    path, state = timm_file[18]
    model = kp.ResNet18V2(
        weights=path,
        input_shape=(None, None, channels),
        include_preprocessing=False,
        classifier_activation=None,
    )
    assert "adapted to" in capfd.readouterr().err
    # timm's adapt_input_conv on the OIHW stem weight: sum for 1, else repeat and scale 3/C.
    weight = state["stem.conv.weight"]
    if channels == 1:
        adapted = weight.sum(axis=1, keepdims=True)
    else:
        repeats = int(np.ceil(channels / 3))
        adapted = np.tile(weight, (1, repeats, 1, 1))[:, :channels] * (3.0 / channels)
    images = _images(channels) / 127.5 - 1.0
    _, want = timm_features(dict(state, **{"stem.conv.weight": adapted}), images)
    _close(model.predict(images, verbose=0), want)


def test_grayscale_input_is_normalised_with_the_mean_of_the_rgb_statistics(timm_file):
    path, state = timm_file[18]
    paper = kp.ResNet18V2(input_shape=(None, None, 1), layout="paper", include_top=False)
    norm = paper.get_layer("preprocessing")
    mean, std = kp.preprocessing.normalization_stats("torch")
    np.testing.assert_allclose(norm.mean_init, [mean.mean()], rtol=1e-6)
    np.testing.assert_allclose(norm.std_init, [std.mean()], rtol=1e-6)
    gray = kp.ResNet18V2(weights=path, input_shape=(None, None, 1), classifier_activation=None)
    images = _images(1)
    _, want = timm_features(
        dict(state, **{"stem.conv.weight": state["stem.conv.weight"].sum(1, keepdims=True)}),
        images / 127.5 - 1.0,
    )
    _close(gray.predict(images, verbose=0), want)


def test_other_channel_counts_build_without_rgb_normalisation_and_say_so():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = kp.ResNet18V2(input_shape=(None, None, 4), include_top=False, pooling="avg")
    assert any("4 channels" in str(w.message) for w in caught)
    assert "preprocessing" not in [layer.name for layer in model.layers]
    assert model.get_config()["include_preprocessing"] is False
    assert model.output_shape == (None, 512)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no warning
        kp.ResNet18V2(input_shape=(None, None, 4), include_preprocessing=False, weights=None)


@pytest.mark.parametrize("layout", ["paper", "keras", "fb"])
def test_each_layout_taps_the_last_unit_at_each_stride(layout):
    """P1 is the stem conv; P2-P5 the last unit output at strides 4-32. The paper, fb and timm
    layouts subsample on a stage's first unit, so those are the stage outputs; keras'
    (TF-slim's) subsample on a stage's last unit, so P2-P4 are the unit before it."""
    model = kp.ResNet50V2(layout=layout, include_top=False)
    last = {"P2": "stage1_unit3", "P3": "stage2_unit4", "P4": "stage3_unit6", "P5": "stage4_unit3"}
    if layout == "keras":
        last.update(P2="stage1_unit2", P3="stage2_unit3", P4="stage3_unit5")
    taps = model.pyramid_outputs
    assert taps["P1"] is model.get_layer("stem_conv").output
    for level, unit in last.items():
        assert taps[level] is model.get_layer(unit).output, (level, unit)
    shapes = keras.Model(model.inputs, taps)(_images(size=96))
    assert [v.shape[1] for v in shapes.values()] == [48, 24, 12, 6, 3]
    assert [v.shape[-1] for v in shapes.values()] == [64, 256, 512, 1024, 2048]


def test_keras_layout_output_stride_follows_tf_slim():
    """TF-slim's stack_blocks_dense: once the stride reaches output_stride, a unit runs at the
    current rate with stride 1 and the rate is multiplied by the stride it had."""
    model = kp.ResNet50V2(layout="keras", include_top=False, output_stride=8)
    rows = {
        unit.name: (unit.strides, unit.first_dilation, unit.dilation)
        for unit in model.layers
        if unit.name.startswith("stage")
    }
    assert rows["stage1_unit3"] == (2, 1, 1)  # 4 -> 8
    assert rows["stage2_unit1"] == (1, 1, 1)
    assert rows["stage2_unit4"] == (1, 1, 1)  # at 8: stride 1, rate 1, then rate 2
    assert rows["stage3_unit1"] == (1, 2, 2)
    assert rows["stage3_unit6"] == (1, 2, 2)  # rate 2, then rate 4
    assert rows["stage4_unit1"] == (1, 4, 4)
    features = model(_images(size=64))
    assert features.shape[1:3] == (8, 8)


def test_plan_units_is_timms_rule():
    plan = plan_units(
        (2, 2, 2, 2), (1, 2, 2, 2), stride_on_last_unit=False, output_stride=16, stem_stride=4
    )
    assert [(u.strides, u.first_dilation, u.dilation) for u in plan] == [
        (1, 1, 1),
        (1, 1, 1),
        (2, 1, 1),
        (1, 1, 1),
        (2, 1, 1),
        (1, 1, 1),
        (1, 1, 2),  # stage 4, block 0: first 3x3 at 1 (dilation 2 is in (1, 2))
        (1, 2, 2),
    ]


@pytest.mark.parametrize("output_stride", [4, 12, 64])
def test_output_stride_that_cannot_work_says_why(output_stride):
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        kp.ResNet18V2(output_stride=output_stride)


@pytest.mark.parametrize("builder,features", [(kp.ResNet18V2, 512), (kp.ResNet50V2, 2048)])
def test_keras_applications_own_checks_pass(builder, features, tmp_path):
    """keras.applications' applications_test, on our builders (the checks that apply)."""
    for channels in (1, 4):  # test_application_notop_variable_input_channel
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = builder(weights=None, include_top=False, input_shape=(None, None, channels))
        assert list(model.outputs[0].shape) == [None, None, None, features]
    model = builder(weights=None, include_top=False, input_shape=(64, 80, 3))  # custom shape
    assert list(model.outputs[0].shape) == [None, 2, 3, features]
    tensor = keras.Input((96, 96, 3))  # custom input tensor
    model = builder(weights=None, input_tensor=tensor, include_top=False, pooling="max")
    assert model.inputs[0] is tensor and list(model.outputs[0].shape) == [None, features]
    model = builder(weights=None, classes=3, classifier_activation="linear")
    assert model.layers[-1].activation.__name__ == "linear"
    path = str(tmp_path / "m.keras")  # serialization
    model.save(path)
    assert keras.models.load_model(path).get_config() == model.get_config()


# ------------------------------------------------ BiT and the 'd' nets (timm's other layouts)


@pytest.mark.parametrize(
    "variant,depth,width,layout,norm,output_stride",
    [
        ("bit", 50, 1, "bit", "group", 32),
        ("bit", 18, 2, "bit", "group", 16),  # a width multiplier; a basic BiT of our own
        ("d_bn", 18, 1, "timm_d", "batch", 8),  # average-pool projections in dilated stages
        ("d_gn", 50, 1, "timm_d", "group", 32),
        ("d_evos", 50, 1, "timm_d", "evonorm_s0", 16),
    ],
)
def test_other_timm_layouts_equal_timm(
    tmp_path, variant, depth, width, layout, norm, output_stride
):
    state = timm_state_dict(depth, np.random.default_rng(depth), variant=variant, width=width)
    path = tmp_path / "model.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    model = kp.ImageNetResNetV2(
        depth, weights=str(path), output_stride=output_stride, classifier_activation=None
    )
    config = model.get_config()  # layout, norm and width read from the file
    assert (config["layout"]["name"], config["norm"], config["width_multiplier"]) == (
        layout,
        norm,
        width,
    )
    images = _images()
    logits, taps = keras.Model(model.inputs, [model.output, model.pyramid_outputs])(images)
    want_taps, want_logits = timm_features(state, images / 127.5 - 1.0, output_stride)
    for level, want in zip(taps, want_taps):
        _close(taps[level], want)
    _close(logits, want_logits)
    with pytest.raises(ValueError, match=f"need norm='{norm}'"):
        kp.ImageNetResNetV2(depth, weights=str(path), norm="batch" if norm != "batch" else "group")


def test_sources_state_their_publishers_eval_protocol():
    """Every timm source against its pretrained cfg in timm 1.0.31 (`resnetv2.py`), written out
    here: classes, input size, crop_pct, interpolation (mean = std = 0.5 for all)."""
    cfgs = {
        "resnetv2_18.ra4_e3600_r224_in1k": (1000, 224, 0.9, "bicubic"),
        "resnetv2_18d.ra4_e3600_r224_in1k": (1000, 224, 0.9, "bicubic"),
        "resnetv2_34.ra4_e3600_r224_in1k": (1000, 224, 0.9, "bicubic"),
        "resnetv2_34d.ra4_e3600_r224_in1k": (1000, 224, 0.9, "bicubic"),
        "resnetv2_34d.ra4_e3600_r384_in1k": (1000, 384, 1.0, "bicubic"),
        "resnetv2_50.a1h_in1k": (1000, 224, 0.95, "bicubic"),
        "resnetv2_50d_evos.ah_in1k": (1000, 224, 0.95, "bicubic"),
        "resnetv2_50d_gn.ah_in1k": (1000, 224, 0.95, "bicubic"),
        "resnetv2_50x1_bit.goog_distilled_in1k": (1000, 224, 0.875, "bicubic"),
        "resnetv2_101.a1h_in1k": (1000, 224, 0.95, "bicubic"),
        "resnetv2_152x2_bit.goog_teacher_in21k_ft_in1k": (1000, 224, 0.875, "bicubic"),
        "resnetv2_152x2_bit.goog_teacher_in21k_ft_in1k_384": (1000, 384, 1.0, "bicubic"),
    }
    for model in ("50x1", "50x3", "101x1", "101x3", "152x2", "152x4"):
        cfgs[f"resnetv2_{model}_bit.goog_in21k"] = (21843, 224, 0.875, "bilinear")
        size = 480 if model == "152x4" else 448
        cfgs[f"resnetv2_{model}_bit.goog_in21k_ft_in1k"] = (1000, size, 1.0, "bilinear")
    timm_sources = {s.name: s for s in kp.weights.sources() if s.publisher == "timm"}
    assert sorted(timm_sources) == sorted(f"timm:{name}" for name in cfgs)  # all 24
    for name, (classes, size, crop, interpolation) in cfgs.items():
        source = timm_sources[f"timm:{name}"]
        protocol = source.eval_protocol
        assert (source.classes, protocol.image_size) == (classes, size), name
        assert (protocol.crop_fraction, protocol.interpolation) == (crop, interpolation), name
        assert source.url == f"https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
        assert bool(source.accuracy) == (classes == 1000), name
        if "_bit" in name:
            assert (source.layout, int(name.split("x")[1][0])) == ("bit", source.width)


def test_readme_lists_every_source():
    import pathlib

    readme = pathlib.Path(__file__).parents[1].joinpath("README.md").read_text(encoding="utf-8")
    assert kp.weights.registry.sources_table() in readme


def test_wrong_checkpoint_or_source_name_says_what_would_take_it(tmp_path):
    state = timm_state_dict(18, 0, variant="d_bn", calibrate=False)
    path = str(tmp_path / "r18d.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path)
    with pytest.raises(ValueError, match=r"ResNet-18 checkpoint \(timm_d layout, batch norm\)"):
        kp.ResNet50V2(weights=path)
    with pytest.raises(ValueError, match="Did you mean 'timm:resnetv2_50x1_bit.goog_in21k'"):
        kp.ResNet50V2(weights="timm:resnetv2_50x1_bit.goog_in21")


def test_weight_standardisation_is_finite_in_float16():
    """BiT's epsilon (1e-8) is 0 in float16: a zero-initialised conv would give 0/0."""
    conv = kp.layers.StandardizedConv2D(4, 3, kernel_initializer="zeros", dtype="mixed_float16")
    assert np.isfinite(keras.ops.convert_to_numpy(conv(np.ones((1, 5, 5, 2), "float16")))).all()


def test_a_dilated_unit_keeps_stride_1():
    with pytest.raises(ValueError, match="1 on a strided unit"):
        kp.PreActBlock(8, strides=2, dilation=2)


def test_preprocess_input_normalises_grayscale_as_the_models_do():
    model = kp.ResNet18V2(input_shape=(None, None, 1), include_top=False, layout="paper")
    gray = np.full((1, 2, 2, 1), 100.0, "float32")
    np.testing.assert_allclose(
        kp.preprocess_input(gray, "torch"), model.get_layer("preprocessing")(gray), rtol=1e-6
    )
