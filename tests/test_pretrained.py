"""Pretrained weights: converters against independent references, the registry, download and cache.

Every foreign checkpoint here is written in its real format with random values
and randomised BN statistics (so a wrong mapping changes the logits): a timm
state dict saved with `safetensors`, a keras.applications `.h5` written by
Keras' own legacy HDF5 saving, and an fb.resnet.torch module tree written in
the Torch7 binary format. The references are timm's and fb.resnet.torch's
graphs written with raw `tf.nn` ops (`foreign_nets.py`) and keras.applications
itself.
"""

import dataclasses
import hashlib
import os
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest
import torch7_writer
import torchfile
from foreign_nets import fb_module_tree, timm_forward, timm_state_dict, torch7_forward
from safetensors.numpy import save_file

import keras_preact as kp
from keras_preact import preprocessing
from keras_preact.weights import download, registry

SIZES = (224, 320)


def _close(got, expected, rtol=1e-4):
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error <= rtol, f"max |diff| / max |logit| = {error:.2e}"
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))


def _images(rng, size, count=2):
    return rng.uniform(0, 255, (count, size, size, 3)).astype("float32")


def _save_timm(path, depth, seed=0, classes=1000):
    state = timm_state_dict(depth, np.random.default_rng(seed), classes=classes)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return state


@pytest.fixture(scope="module")
def timm18(tmp_path_factory):
    path = tmp_path_factory.mktemp("timm") / "model.safetensors"
    return path, _save_timm(path, 18)


# ------------------------------------------------------------------ converters


@pytest.mark.parametrize("depth", [18, 50])
def test_timm_safetensors_matches_timm_graph(depth, tmp_path, rng, timm18):
    if depth == 18:
        path, state = timm18
    else:
        path = tmp_path / "model.safetensors"
        state = _save_timm(path, depth, seed=depth)
    model = kp.ImageNetResNetV2(depth, weights=str(path), classifier_activation=None)
    assert model.get_layer("stage2_unit1").padding == "symmetric"  # layout taken from the file
    for size in SIZES:
        images = _images(rng, size)
        _close(model.predict(images, verbose=0), timm_forward(state, images / 127.5 - 1.0))


def test_keras_applications_h5_matches_keras_applications(tmp_path, rng, randomize_batchnorm):
    from keras.src.legacy.saving import legacy_h5_format

    reference = keras.applications.ResNet50V2(weights=None, classifier_activation=None)
    randomize_batchnorm(reference, seed=5)
    path = tmp_path / "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as h5:
        legacy_h5_format.save_weights_to_hdf5_group(h5, reference)
    assert kp.weights.detect_format(str(path)) == "keras_h5"
    model = kp.ResNet50V2(weights=str(path), classifier_activation=None)
    for size in SIZES:
        images = _images(rng, size)
        expected = reference.predict(
            keras.applications.resnet_v2.preprocess_input(images.copy()), verbose=0
        )
        _close(model.predict(images, verbose=0), expected)


def _fb_normalise(images):
    mean, std = preprocessing.normalization_stats("torch")
    return (images - mean) / std


def _walk(node):
    yield node
    if isinstance(node, torch7_writer.TorchClass):
        for child in node.fields.get("modules", []):
            yield from _walk(child)


@pytest.fixture(scope="module")
def fb50(tmp_path_factory):
    path = tmp_path_factory.mktemp("fb") / "resnet-50.t7"
    tree = fb_module_tree(50, np.random.default_rng(7), torch7_writer)
    torch7_writer.save(path, tree)
    return path, tree


def test_torch7_matches_fb_graph(fb50, rng):
    path, _ = fb50
    model = kp.ResNet50V2(weights=str(path), classifier_activation=None)
    assert not model.get_layer("stage1_unit2").preactivate  # the fb layout, from the file
    reference = torchfile.load(str(path))
    for size in SIZES:
        images = _images(rng, size)
        _close(model.predict(images, verbose=0), torch7_forward(reference, _fb_normalise(images)))


def test_torch7_old_formats_running_std_and_conv_biases(tmp_path, rng):
    """Older nn wrote running_std (1/sqrt(var + eps)); older cudnn kept conv biases."""
    tree = fb_module_tree(18, np.random.default_rng(3), torch7_writer, bias=True)
    for node in _walk(tree):
        fields = getattr(node, "fields", {})
        modules = fields.get("modules", [])
        is_branch = [getattr(m, "typename", "") for m in modules].count("cudnn.SpatialConvolution")
        if node.typename == "nn.Sequential" and is_branch == 2:
            modules[-1].fields.pop("bias")  # a branch's last conv feeds the sum: no BN after it
        if node.typename == "nn.SpatialBatchNormalization":
            variance = fields.pop("running_var").array
            fields["running_std"] = torch7_writer.cuda(1.0 / np.sqrt(variance + fields["eps"]))
    path = tmp_path / "old.t7"
    torch7_writer.save(path, tree)
    model = kp.ResNet18V2(weights=str(path), classifier_activation=None)
    images = _images(rng, 224)
    expected = torch7_forward(torchfile.load(str(path)), _fb_normalise(images))
    _close(model.predict(images, verbose=0), expected)


def test_torch7_tree_of_another_layout_names_first_difference(tmp_path):
    path = tmp_path / "resnet-18.t7"
    torch7_writer.save(path, fb_module_tree(18, np.random.default_rng(1), torch7_writer))
    with pytest.raises(ValueError) as error:
        kp.ResNet34V2(weights=str(path))
    message = str(error.value)
    assert "layout='fb' at model.modules[5].modules[0]" in message  # stage 2, unit 1
    assert "stage1_unit3" in message and "found a 'bn' module" in message


def test_conflicting_layout_and_wrong_depth_are_refused(timm18):
    path, _ = timm18
    with pytest.raises(ValueError, match=r"need layout='timm'.*layout='paper' was given"):
        kp.ResNet18V2(weights=str(path), layout="paper")
    with pytest.raises(ValueError, match=r"a ResNet-18 checkpoint .* Use ResNet18V2\(weights="):
        kp.ResNet34V2(weights=str(path))


def test_missing_extra_and_misshaped_tensors_are_listed(tmp_path, timm18):
    _, state = timm18
    broken = {k: np.ascontiguousarray(v) for k, v in state.items()}
    del broken["stages.0.blocks.0.norm1.running_var"]
    broken["stages.0.blocks.0.extra.weight"] = np.zeros(3, "float32")
    broken["stages.1.blocks.0.conv2.weight"] = np.zeros((128, 128, 1, 1), "float32")
    path = tmp_path / "broken.safetensors"
    save_file(broken, str(path))
    with pytest.raises(ValueError) as error:
        kp.ResNet18V2(weights=str(path))
    message = str(error.value)
    assert "1 model variables get nothing: stage1_unit1/norm1/moving_variance" in message
    assert "1 tensors fit no variable: stages.0.blocks.0.extra.weight" in message
    assert "stage2_unit1/conv2/kernel (model (3, 3, 128, 128), file (1, 1, 128, 128))" in message


_TIMM_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean"}
_TIMM_BN["running_var"] = "moving_variance"


def timm_backbone_pairs(model, state):
    """`[(timm key, the model's variable)]` for every backbone tensor of a timm ResNet state dict.

    The mapping is written out here from timm's key names (`foreign_nets.timm_state_dict`):
    `stem.conv` -> `stem_conv`, `stages.{i}.blocks.{j}.{conv,norm}{k}` -> unit
    `stage{i+1}_unit{j+1}`'s `{conv,norm}{k}`, `downsample.conv` -> its `downsample`, `norm`
    -> `post_bn`. The classifier (`head.fc`) and `num_batches_tracked` are left out.
    """
    pairs = []
    for key in state:
        parts = key.split(".")
        if parts[0] == "head" or parts[-1] == "num_batches_tracked":
            continue
        if parts[0] == "stem":
            layer = model.get_layer("stem_conv")
        elif parts[0] == "norm":
            layer = model.get_layer("post_bn")
        else:
            unit = model.get_layer(f"stage{int(parts[1]) + 1}_unit{int(parts[3]) + 1}")
            layer = getattr(unit, parts[4])
        attr = "kernel" if parts[-2].startswith("conv") else _TIMM_BN[parts[-1]]
        pairs.append((key, getattr(layer, attr)))
    return pairs


def assert_holds_timm_backbone(model, state, moving_momentum=None):
    """The model's backbone variables equal the state dict's tensors (OIHW -> HWIO converted
    here); its classifier, if any, is not the checkpoint's but its initialisation.

    `moving_momentum`: the model has since taken one training step at learning rate 0, so
    its BN moving statistics took one step of their average, m * file + (1 - m) * batch:
    the moving variances are at least m times the file's (a batch variance is >= 0).
    """
    pairs = timm_backbone_pairs(model, state)
    assert len(pairs) == sum(
        not k.startswith("head") and not k.endswith("num_batches_tracked") for k in state
    )
    assert {k.rsplit(".", 1)[-1] for k, _ in pairs} == {"weight", "bias", *_TIMM_BN}
    for key, variable in pairs:
        expected = state[key]
        if expected.ndim == 4:  # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out)
            expected = expected.transpose(2, 3, 1, 0)
        got = variable.numpy()
        if moving_momentum is None or not key.endswith(("running_mean", "running_var")):
            np.testing.assert_array_equal(got, expected, err_msg=key)
        elif key.endswith("running_var"):
            assert np.all(got >= moving_momentum * expected * (1 - 1e-6)), key
    if "predictions" in [layer.name for layer in model.layers]:
        kernel, bias = model.get_layer("predictions").get_weights()
        head = state["head.fc.weight"][:, :, 0, 0].T  # (C, classes)
        classes = kernel.shape[-1]
        assert not np.allclose(kernel, head[:, :classes]), "the checkpoint's classifier"
        np.testing.assert_array_equal(bias, 0)  # its initialisation, not head.fc.bias
        assert state["head.fc.bias"][:classes].any()


def test_fine_tuning_loads_backbone_and_skips_head(timm18, rng, capfd):
    path, state = timm18
    full = kp.ResNet18V2(weights=str(path))
    capfd.readouterr()
    tuned = kp.ResNet18V2(weights=str(path), classes=7)
    assert "the 7-class classifier 'predictions' starts from its initialisation" in (
        capfd.readouterr().err
    )
    assert_holds_timm_backbone(tuned, state)
    features = kp.ResNet18V2(weights=str(path), include_top=False, pooling="avg")
    assert "skipped the checkpoint's classifier" in capfd.readouterr().err
    assert_holds_timm_backbone(features, state)
    images = _images(rng, 64)
    backbone = keras.Model(full.inputs, full.get_layer("post_relu").output)
    pooled = backbone.predict(images, verbose=0).mean(axis=(1, 2))
    np.testing.assert_allclose(features.predict(images, verbose=0), pooled, rtol=1e-5, atol=1e-6)
    assert tuned.output_shape == (None, 7)


def test_detect_format_refuses_other_files(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not weights")
    with pytest.raises(ValueError, match="not a checkpoint keras-preact can read"):
        kp.ResNet18V2(weights=str(path))


# ------------------------------------------------------------------ registry


def test_registry_lists_every_depth_with_its_preprocessing():
    assert set(kp.weights.DEFAULT_SOURCES) == {18, 34, 50, 101, 152, 200}
    for depth, name in kp.weights.DEFAULT_SOURCES.items():
        source = kp.weights.get_source("imagenet", depth=depth)
        assert source.name == name and source.depth == depth
        assert source.crop_fraction in (0.95, 0.9, 0.875)
        assert source.accuracy[224][0] > 70
    assert kp.weights.get_source("fb:resnet-200").layout == "fb"
    assert kp.weights.get_source("keras:resnet101v2").notop_hash == (
        "c0ed64b8031c3730f411d2eb4eea35b5"
    )
    with pytest.raises(ValueError, match="ResNet-200 weights; this model is ResNet-50"):
        kp.weights.get_source("fb:resnet-200", depth=50)


def test_eval_crop_follows_source_crop_fraction():
    from keras_preact.data.crops import default_resize_size

    assert default_resize_size(224, 0.95) == 235  # timm: floor(224 / crop_pct)
    assert default_resize_size(224, 0.9) == 248
    assert default_resize_size(224, 0.875) == 256
    assert default_resize_size(320, 0.95) == 320  # the paper's 320 crop


# ------------------------------------------------------------------ download and cache


@pytest.fixture
def mirrored_source(tmp_path, monkeypatch, timm18):
    """A source the test registers, its file under a file:// mirror, Keras' cache in tmp."""
    path, state = timm18
    mirror = tmp_path / "mirror"
    (mirror / "test").mkdir(parents=True)
    data = path.read_bytes()
    (mirror / "test" / "r18.safetensors").write_bytes(data)
    source = kp.weights.register_source(
        kp.weights.WeightsSource(
            name="test:r18",
            depth=18,
            url="https://example.invalid/r18.safetensors",
            mirror_path="test/r18.safetensors",
            format="safetensors",
            layout="timm",
            normalization="tf",
            interpolation="bicubic",
            crop_fraction=0.95,
            accuracy={224: (50.0, None)},
            published="this test",
            license="test",
            size_mb=47,
            file_hash=hashlib.sha256(data).hexdigest(),
        )
    )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(download.MIRROR_ENV, (mirror).as_uri())
    yield source, mirror / "test" / "r18.safetensors", state
    registry.unregister_source("test:r18")


def test_mirror_download_hash_convert_then_cache(mirrored_source, rng):
    source, mirrored, state = mirrored_source
    images = _images(rng, 64)
    expected = timm_forward(state, images / 127.5 - 1.0)
    first = kp.ResNet18V2(weights="test:r18", classifier_activation=None)
    _close(first.predict(images, verbose=0), expected)
    assert os.path.isfile(download.downloaded_path(source))
    assert os.path.isfile(download.converted_path(source))
    mirrored.unlink()  # the second call must not read the mirror
    os.remove(download.downloaded_path(source))
    second = kp.ResNet18V2(weights="test:r18", classifier_activation=None)
    _close(second.predict(images, verbose=0), expected)
    # The model carries the source's evaluation protocol, in .keras files too.
    assert kp.eval_preprocessing(second)["interpolation"] == "bicubic"
    assert kp.eval_preprocessing(second)["crop_fraction"] == 0.95


def test_corrupt_mirror_file_fails_hash_and_caches_nothing(mirrored_source):
    source, mirrored, _ = mirrored_source
    data = bytearray(mirrored.read_bytes())
    data[-1] ^= 0xFF
    mirrored.write_bytes(bytes(data))
    with pytest.raises(kp.weights.WeightsDownloadError) as error:
        kp.ResNet18V2(weights="test:r18")
    message = str(error.value)
    assert "failed its hash check" in message and mirrored.as_uri() in message
    assert download.downloaded_path(source) in message and "weights='/path/to/" in message
    folder = os.path.dirname(download.downloaded_path(source))
    assert os.listdir(folder) == []
    assert not os.path.exists(download.converted_path(source))


def test_unhashed_source_is_cached_atomically(mirrored_source, rng):
    source, mirrored, state = mirrored_source
    unhashed = kp.weights.register_source(dataclasses.replace(source, file_hash=None))
    folder = os.path.dirname(download.downloaded_path(unhashed))
    os.makedirs(folder)
    # What an interrupted download leaves is a temporary name, which no later call loads.
    stale = os.path.join(folder, ".test--r18.safetensors.999.partial")
    with open(stale, "wb") as f:
        f.write(mirrored.read_bytes()[:1000])
    mirrored.rename(mirrored.with_suffix(".moved"))
    with pytest.raises(kp.weights.WeightsDownloadError, match="could not be downloaded"):
        kp.ResNet18V2(weights="test:r18")
    assert sorted(os.listdir(folder)) == [os.path.basename(stale)]
    mirrored.with_suffix(".moved").rename(mirrored)
    model = kp.ResNet18V2(weights="test:r18", classifier_activation=None)
    images = _images(rng, 64)
    _close(model.predict(images, verbose=0), timm_forward(state, images / 127.5 - 1.0))


def test_imagenet_offline_fails_fast_with_instructions(tmp_path):
    """No network and no mirror: one clear error in seconds (a closed local proxy stands in)."""
    env = {
        **os.environ,
        "KERAS_HOME": str(tmp_path),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    env.pop(download.MIRROR_ENV, None)
    code = "import keras_preact as kp; kp.ResNet18V2(weights='imagenet')"
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "WeightsDownloadError" in last and "could not be downloaded" in last
    assert "https://huggingface.co/timm/resnetv2_18.ra4_e3600_r224_in1k" in last
    assert str(tmp_path) in last and "KERAS_PREACT_WEIGHTS_MIRROR" in last
    assert elapsed < 30


def test_export_and_keras_file_follow_the_source_protocol(mirrored_source, tmp_path):
    """The source's bicubic crop_pct-0.95 crops reach the SavedModel and survive a .keras file."""
    import tensorflow as tf

    from keras_preact.data.crops import decode_image, eval_crop
    from keras_preact.export import pipeline, verify

    model = kp.ResNet18V2(weights="test:r18")
    model.save(tmp_path / "r18.keras")
    reloaded = keras.models.load_model(tmp_path / "r18.keras")
    assert kp.eval_preprocessing(reloaded)["crop_fraction"] == 0.95
    result = pipeline.export_all(reloaded, tmp_path / "out", tflite=[], verify=False)
    assert (result.crop_size, result.resize_size, result.interpolation) == (224, 235, "bicubic")
    _, data = verify.load_images(None)[0]
    served = tf.saved_model.load(result.saved_model_dir).signatures["serving_default"]
    got = served(image_bytes=tf.constant([data]))["probabilities"].numpy()
    crop = eval_crop(decode_image(data), 224, 235, "bicubic").numpy()[None]
    np.testing.assert_allclose(got, model.predict(crop, verbose=0), atol=1e-5)
    bilinear = eval_crop(decode_image(data), 224, 256, "bilinear").numpy()[None]
    assert np.abs(model.predict(bilinear, verbose=0) - got).max() > 1e-4  # the check can fail
