"""Models that carry their own config, and files written before they did.

`tests/data/v0_1_files/` holds `.keras`, `.weights.h5` and run-directory
files written by keras-preact 0.1.0 (plain functional models, eval protocol
in the preprocessing layer) with every weight and BN statistic random, and
their outputs; `make_files.py` there says how they were made.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

import keras_preact as kp
from keras_preact import preprocessing, run_dir
from keras_preact.export import model as export_model
from keras_preact.models.float32 import float32_copy

OLD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "v0_1_files")
OLD_NETS = ("cifar8_full_preact", "cifar11_relu_only_preact_gating", "cifar8_original_conv1x1")

# The paper's Table 1 (ImageNet) / Sec. 4 (CIFAR) units per stage, written out here.
PAPER_STAGES = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3], 200: [3, 24, 36, 3]}


def _inputs(size=32, count=2):
    return np.random.default_rng(1).uniform(0, 255, (count, size, size, 3)).astype("float32")


def test_imagenet_config_states_the_architecture_and_rebuilds_it():
    model = kp.ResNet50V2(layout="timm", classes=7, shortcut="constant_scaling", drop_path_rate=0.1)
    config = model.get_config()
    assert json.loads(json.dumps(config)) == config  # plain JSON, as .keras files store it
    assert (config["depth"], config["unit"], config["layout"]["name"]) == (50, "bottleneck", "timm")
    assert config["layout"] == dataclasses.asdict(kp.LAYOUTS["timm"])  # every field, as built
    assert config["stage_units"] == PAPER_STAGES[50]
    assert config["stage_widths"] == [64, 128, 256, 512]
    assert (config["classes"], config["shortcut"], config["shortcut_scale"]) == (
        7,
        "constant_scaling",
        0.5,
    )
    assert config["eval_protocol"]["interpolation"] == "bilinear"  # the paper's, no source
    assert "weights" not in config and "input_tensor" not in config
    again = kp.ImageNetResNetV2.from_config(config)
    assert again.get_config() == config
    assert [w.shape for w in again.weights] == [w.shape for w in model.weights]
    assert again.get_layer("stage4_unit3").drop_path_rate == pytest.approx(0.1)
    assert (model.depth, model.layout.name, model.normalization) == (50, "timm", "tf")


def test_a_layout_of_ones_own_is_saved_as_its_fields():
    layout = kp.LAYOUTS["paper"].__class__(**{**kp.LAYOUTS["paper"].__dict__, "name": "mine"})
    model = kp.ResNet18V2(layout=layout, classes=3)
    assert model.get_config()["layout"]["name"] == "mine"
    assert kp.ImageNetResNetV2.from_config(model.get_config()).layout == layout


def test_config_that_contradicts_itself_is_refused():
    config = kp.ResNet18V2(classes=3).get_config()
    config["stage_units"] = [3, 4, 6, 3]
    with pytest.raises(ValueError, match="stage_units"):
        kp.ImageNetResNetV2.from_config(config)


def test_keras_file_keeps_class_config_eval_protocol_and_outputs(tmp_path, randomize_batchnorm):
    protocol = {"interpolation": "bicubic", "crop_fraction": 0.9, "weights": "mine"}
    model = kp.CIFARResNetV2(11, "bottleneck", width=4, classes=3, eval_protocol=protocol)
    randomize_batchnorm(model)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is kp.CIFARResNetV2
    assert loaded.get_config() == model.get_config()
    assert loaded.eval_protocol == kp.EvalProtocol(**protocol)
    assert preprocessing.eval_preprocessing(loaded)["crop_fraction"] == 0.9
    x = _inputs()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("name", OLD_NETS)
def test_files_of_version_0_1_keep_loading(name):
    x = np.load(os.path.join(OLD, "inputs.npy"))
    want = np.load(os.path.join(OLD, f"{name}.outputs.npy"))
    loaded = keras.models.load_model(os.path.join(OLD, f"{name}.keras"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    with open(os.path.join(OLD, f"{name}.json")) as f:
        arguments = json.load(f)
    for weights in (f"{name}.weights.h5", f"{name}.keras"):
        built = kp.CIFARResNetV2(**arguments, weights=os.path.join(OLD, weights))
        np.testing.assert_allclose(built.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    copy = float32_copy(loaded)  # a plain functional model: cloned layer by layer
    np.testing.assert_allclose(copy.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    if name == "cifar8_full_preact":  # 0.1.0 kept the protocol in the preprocessing layer
        protocol = preprocessing.eval_preprocessing(loaded)
        assert (protocol["interpolation"], protocol["crop_fraction"]) == ("bicubic", 0.95)


def test_run_directories_of_version_0_1_build_and_export():
    run = os.path.join(OLD, "run_cifar8")
    spec = run_dir.read_spec(run)
    model = spec.build(weights=os.path.join(run, run_dir.WEIGHTS))
    assert type(model) is kp.CIFARResNetV2 and model.get_config()["width"] == 4
    x = np.load(os.path.join(OLD, "inputs.npy"))
    want = np.load(os.path.join(run, "outputs.npy"))
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    plan = export_model.prepare(run)
    assert (plan.crop_size, plan.resize_size, plan.interpolation) == (32, 32, "bilinear")
    assert plan.labels == [str(i) for i in range(10)]
    np.testing.assert_allclose(plan.model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)

    spec = run_dir.read_spec(os.path.join(OLD, "spec_imagenet18"))  # builder arguments
    model = spec.build()
    assert type(model) is kp.ImageNetResNetV2
    assert (model.layout.name, model.output_shape) == ("timm", (None, 10))
    assert spec.resize_size(224) == 248  # floor(224 / 0.9): the source's crop fraction


def test_spec_of_a_model_is_its_config_and_builds_it_again(tmp_path):
    model = kp.ResNet18V2(layout="keras", classes=4, eval_protocol={"crop_fraction": 0.95})
    spec = run_dir.ModelSpec.of_model(model, labels=list("abcd"), image_size=224)
    assert (spec.builder, spec.normalization, spec.crop_fraction) == (
        "ImageNetResNetV2",
        "tf",
        0.95,
    )
    run_dir.write_spec(str(tmp_path), spec)
    rebuilt = run_dir.read_spec(str(tmp_path)).build(classifier_activation="softmax")
    assert rebuilt.get_config() == model.get_config()


def test_float32_copy_of_a_mixed_precision_model_is_the_same_model_in_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        trained = kp.CIFARResNetV2(8, width=4, classes=3, remat=True, classifier_activation=None)
    finally:
        keras.config.set_dtype_policy(previous)
    copy = float32_copy(trained, classifier_activation="softmax")
    config = copy.get_config()
    assert type(copy) is kp.CIFARResNetV2
    assert (config["remat"], config["classifier_activation"], config["input_shape"]) == (
        False,
        "softmax",
        [None, None, 3],
    )
    assert {v.dtype for v in copy.weights} == {"float32"}
    assert all(layer.compute_dtype == "float32" for layer in copy.layers)
    logits = trained.predict(_inputs(), verbose=0).astype("float32")
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(copy.predict(_inputs(), verbose=0), expected, atol=0.05)


def test_arguments_that_json_cannot_hold_are_saved_as_json():
    model = kp.CIFARResNetV2(
        8,
        width=4,
        normalization=(np.float32(120.0), np.array([60.0, 61.0, 62.0])),
        classifier_activation=keras.activations.softmax,
    )
    config = model.get_config()
    assert config["normalization"] == [[120.0, 120.0, 120.0], [60.0, 61.0, 62.0]]
    assert config["classifier_activation"] == "softmax"
    again = kp.CIFARResNetV2.from_config(json.loads(json.dumps(config)))
    np.testing.assert_allclose(again.get_layer("preprocessing").std_init, [60.0, 61.0, 62.0])


def test_input_tensor_out_of_other_layers_is_refused_with_what_to_do():
    image = keras.Input((64, 64, 3))
    with pytest.raises(ValueError, match=r"input_tensor must be a keras.Input\(...\) tensor"):
        kp.ResNet18V2(input_tensor=keras.layers.Rescaling(1.0)(image))


def test_layouts_check_their_fields():
    paper = dataclasses.asdict(kp.LAYOUTS["paper"])
    with pytest.raises(ValueError, match="Unknown stem 'dep'"):
        kp.Layout(**{**paper, "stem": "dep"})
    with pytest.raises(ValueError, match="stem='deep' has its own norms"):
        kp.Layout(**{**paper, "stem": "deep"})
