"""The run directory contract: atomic files, the spec beside the model, and export reading it."""

import json
import os
import sys

import numpy as np
import pytest
from export_helpers import run_command, tiny_model

from keras_preact import run_dir
from keras_preact.export.pipeline import export_all
from keras_preact.export.verify import eval_crops, sample_images


def test_atomic_path_leaves_the_old_file_and_no_temporary_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    run_dir.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with run_dir.atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write('{"half": ')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]
    run_dir.atomic_write(tmp_path / "blob.bin", b"\x00\xff")
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\xff"
    assert sorted(os.listdir(tmp_path)) == ["blob.bin", "metrics.json"]


def _spec(**overrides):
    fields = dict(
        builder="CIFARResNetV2",
        kwargs={
            "depth": 8,
            "width": 8,
            "classes": 3,
            "normalization": "torch",
            "input_shape": [None, None, 3],
        },
        labels=["cat", "dog", "bird"],
        normalization="torch",
        image_size=56,
        eval_crop_sizes=[64, 96],
        interpolation="bicubic",
        crop_fraction=0.9,
    )
    return run_dir.ModelSpec(**{**fields, **overrides})


def test_spec_round_trips_and_states_the_eval_geometry(tmp_path):
    spec = _spec()
    run_dir.write_spec(tmp_path, spec)
    assert run_dir.read_spec(tmp_path) == spec
    assert (tmp_path / "labels.txt").read_text() == "cat\ndog\nbird\n"
    assert spec.crop_size == 64 and spec.resize_size() == round(64 / 0.9)
    # The paper's protocol without a source: 224 from 256, 320 from 320 (no resize border).
    paper = _spec(crop_fraction=None, eval_crop_sizes=[224, 320])
    assert (paper.resize_size(224), paper.resize_size(320)) == (256, 320)
    # A CIFAR-style run evaluates whole images: no border at its own size.
    assert _spec(eval_crop_sizes=[], image_size=32).resize_size() == 32
    newer = dict(spec.to_dict(), format=run_dir.SPEC_FORMAT + 1)
    with pytest.raises(ValueError, match="newer keras-preact"):
        run_dir.ModelSpec.from_dict(newer)
    with pytest.raises(FileNotFoundError, match="not a finished keras-preact training run"):
        run_dir.read_spec(tmp_path / "elsewhere")


@pytest.fixture(scope="module")
def hand_made_run(tmp_path_factory):
    """A run directory as training leaves it: model.keras, model.weights.h5, spec.json."""
    folder = tmp_path_factory.mktemp("run")
    model = tiny_model(classes=3)
    model.save(folder / run_dir.MODEL)
    model.save_weights(folder / run_dir.WEIGHTS)
    run_dir.write_spec(folder, _spec(dataset="digits", image_size=32))
    return folder, model


@pytest.mark.slow
def test_export_takes_labels_sizes_interpolation_and_calibration_from_the_run(
    hand_made_run, tmp_path
):
    folder, model = hand_made_run
    images = sample_images()[:4]
    result = export_all(str(folder), str(tmp_path), model_name="r", tflite=["int8"], images=images)
    assert (result.crop_size, result.resize_size, result.interpolation) == (64, 71, "bicubic")
    assert result.labels == ["cat", "dog", "bird"] and result.labels_source.endswith("spec.json")
    report = result.tflite_reports["int8"]
    assert report["calibration"]["source"] == "the run's digits training images"
    # The served probabilities are the model's on the spec's crops (bicubic, 64 from 71).
    import tensorflow as tf

    served = tf.saved_model.load(result.saved_model_dir).signatures["serving_default"](
        image_bytes=tf.constant([data for _, data in images])
    )["probabilities"]
    expected = model(eval_crops(images, 64, 71, "bicubic"), training=False)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    # The spec rebuilds the same network from the weights file.
    rebuilt = run_dir.read_spec(folder).build(weights=str(folder / run_dir.WEIGHTS))
    np.testing.assert_allclose(rebuilt(eval_crops(images, 64, 71, "bicubic")), expected, atol=1e-5)


def test_export_cli_wants_exactly_one_model_source(hand_made_run, tmp_path):
    folder, _ = hand_made_run
    command = [sys.executable, "-m", "export", f"--output_dir={tmp_path}"]
    both = run_command(
        command + [f"--model_dir={folder}", f"--model_path={folder / run_dir.MODEL}"], check=False
    )
    assert both.returncode != 0 and "exactly one of --model_dir" in both.stderr
    missing = run_command(command + [f"--model_dir={tmp_path / 'nothing'}"], check=False)
    assert missing.returncode != 0 and "is not a folder" in missing.stderr
    assert not os.listdir(tmp_path)
