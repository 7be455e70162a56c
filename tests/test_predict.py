"""Batch prediction (`keras_preact.predict`) against the Keras model itself.

The references are computed here, from the decoder and resize the pipelines
share (`decode_image`, `resize_shorter_side`, `eval_crop`) and the reloaded
Keras model of the session's `trained` fixture (a ResNet-8 whose classifier
was fitted on the photos, so its outputs are peaked): a row's top-k must be
that model's softmax on the eval crop; `flip` the mean of the crop's and its
mirror's; `ten_crop` the mean over the ten windows cut here with NumPy
slicing; `--features` the model's `avg_pool` output.
"""

import csv
import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from export_helpers import NAMES, REPO, subprocess_env

from keras_preact import predict
from keras_preact.data.crops import decode_image, eval_crop, resize_shorter_side, ten_crop

CROP, RESIZE = 224, 256  # the tiny model's geometry: no spec, any H/W, the paper's protocol


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos):
    """The photos in a folder and a subfolder, beside a file of random bytes and a text file.

    Returns `(root, good paths in walk order, the bad image's path)`.
    """
    root = tmp_path_factory.mktemp("images")
    (root / "more").mkdir()
    good = []
    for i, (name, data) in enumerate(photos):
        path = root / ("more" if i % 3 == 0 else ".") / name
        path.write_bytes(data)
        good.append(os.path.normpath(str(path)))
    bad = root / "broken.jpg"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    (root / "notes.txt").write_text("not an image")
    in_walk_order = sorted(p for p in good if "/more/" not in p) + sorted(
        p for p in good if "/more/" in p
    )
    return str(root), in_walk_order, str(bad)


def _decoded(paths):
    return [decode_image(open(p, "rb").read()) for p in paths]


def _probabilities_and_features(model, batch):
    pooled = keras.Model(model.input, [model.output, model.get_layer("avg_pool").output])
    probabilities, features = pooled(np.asarray(batch, np.float32), training=False)
    return np.asarray(probabilities), np.asarray(features)


def _check_rows(rows, reference, top_k):
    """Each row's classes, labels and scores are the reference's top-k."""
    for row, expected in zip(rows, reference):
        assert row["classes"][0] == int(np.argmax(expected))
        np.testing.assert_allclose(row["scores"], expected[row["classes"]], atol=2e-6)
        np.testing.assert_allclose(row["scores"], np.sort(expected)[::-1][:top_k], atol=2e-6)
        assert row["labels"] == list(NAMES[row["classes"]])


def _ten_windows(image, crop=CROP):
    """fb.resnet.torch's ten crops cut with NumPy: centre and corners, then their mirrors."""
    h, w = image.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    corners = [(top, left), (0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop)]
    crops = [np.clip(image[t : t + crop, s : s + crop], 0, 255) for t, s in corners]
    return np.stack(crops + [c[:, ::-1] for c in crops])


@pytest.fixture(scope="module")
def plain(trained, folder):
    path, _, _ = trained
    return predict.predict_files(str(path), [folder[0]], top_k=5, features=True, batch_size=8)


def test_rows_are_the_models_softmax_on_eval_crops(trained, folder, plain):
    _, model, _ = trained
    root, good, bad = folder
    assert [row["path"] for row in plain.rows] == good  # walked recursively, in sorted order
    crops = np.stack([eval_crop(image, CROP, RESIZE).numpy() for image in _decoded(good)])
    probabilities, features = _probabilities_and_features(model, crops)
    assert len(set(probabilities.argmax(-1).tolist())) > 3  # the classes vary: the test can fail
    _check_rows(plain.rows, probabilities, top_k=5)
    # --features: the global-average-pool outputs, one row per predicted image.
    assert plain.features.shape == (len(good), features.shape[-1])
    np.testing.assert_allclose(plain.features, features, atol=1e-5)
    assert [path for path, _ in plain.skipped] == [bad]


def test_flip_is_the_mean_of_the_crop_and_its_mirror(trained, folder):
    path, model, _ = trained
    _, good, _ = folder
    result = predict.predict_files(str(path), good, tta="flip", features=True, batch_size=5)
    crops = np.stack([eval_crop(image, CROP, RESIZE).numpy() for image in _decoded(good)])
    straight = _probabilities_and_features(model, crops)
    mirrored = _probabilities_and_features(model, crops[:, :, ::-1])
    assert not np.allclose(straight[0], mirrored[0], atol=1e-3)  # the mirror changes the answer
    _check_rows(result.rows, (straight[0] + mirrored[0]) / 2, top_k=5)
    np.testing.assert_allclose(result.features, (straight[1] + mirrored[1]) / 2, atol=1e-5)


def test_ten_crop_is_the_mean_over_the_ten_windows(trained, folder):
    path, model, _ = trained
    _, good, _ = folder
    good = good[:6]
    result = predict.predict_files(str(path), good, top_k=3, tta="ten_crop", batch_size=4)
    reference = []
    for image in _decoded(good):
        resized = resize_shorter_side(image, RESIZE).numpy()
        reference.append(_probabilities_and_features(model, _ten_windows(resized))[0].mean(0))
    _check_rows(result.rows, np.stack(reference), top_k=3)


def test_ten_crop_windows_on_a_numbered_image():
    # 7x10 pixels, each holding its own position; crop 4 from shorter side 7 (no resize):
    # the centre offset (1.5 across) rounds down, as eval_crop's does.
    image = np.arange(7 * 10 * 3, dtype=np.float32).reshape(7, 10, 3) % 256
    crops = ten_crop(image, 4, resize_size=7).numpy()
    np.testing.assert_array_equal(crops, _ten_windows(image, crop=4))
    np.testing.assert_array_equal(crops[0], eval_crop(image, 4, resize_size=7).numpy())
    np.testing.assert_array_equal(crops[5:], crops[:5, :, ::-1])


def test_unreadable_images_are_named_and_skipped(trained, folder, tmp_path):
    path, _, _ = trained
    _, good, bad = folder
    cut = tmp_path / "cut.jpg"  # a JPEG's signature, then its decoder fails
    cut.write_bytes(open([p for p in good if p.endswith(".jpg")][0], "rb").read()[:300])
    missing = str(tmp_path / "missing.png")
    paths = [good[0], bad, missing, good[1], str(cut), good[2]]
    told = []
    result = predict.predict_files(
        str(path), paths, batch_size=2, on_skip=lambda p, why: told.append((p, why))
    )
    assert [row["path"] for row in result.rows] == [good[0], good[1], good[2]]
    assert [p for p, _ in result.skipped] == [bad, missing, str(cut)] == [p for p, _ in told]
    reasons = dict(result.skipped)
    assert reasons[bad].startswith("is not a JPEG, PNG, GIF or BMP image")
    assert reasons[missing] == "cannot be read (No such file or directory)"
    assert reasons[str(cut)].startswith("could not be decoded")
    assert all("\n" not in why for why in reasons.values())
    # Nothing readable: no rows, no exception.
    nothing = predict.predict_files(str(path), [bad, missing], features=True)
    assert nothing.rows == [] and len(nothing.skipped) == 2 and len(nothing.features) == 0


def test_csv_and_json_lines_parse_back_to_the_rows(plain, tmp_path):
    odd = {  # a name and labels that CSV must quote
        "path": 'odd, "name".jpg',
        "labels": ["a, b", 'say "c"', "d", "é", "f"],
        "scores": [0.5, 0.25, 0.125, 0.0625, 1e-9],
        "classes": [1, 2, 3, 4, 5],
    }
    rows = plain.rows + [odd]
    predict.write_rows(tmp_path / "p.csv", rows)
    predict.write_rows(tmp_path / "p.jsonl", rows)
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    from_csv = [
        {
            "path": line["path"],
            "labels": [line[f"label_{i}"] for i in range(1, 6)],
            "scores": [float(line[f"score_{i}"]) for i in range(1, 6)],
            "classes": [int(line[f"class_{i}"]) for i in range(1, 6)],
        }
        for line in table
    ]
    assert from_csv == rows  # scores exactly: Python writes floats that read back the same
    with open(tmp_path / "p.jsonl", encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == rows


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    plain_out, terminal_out = io.StringIO(), Terminal()
    for out in (plain_out, terminal_out):
        progress = predict.Progress(100, long_after=32, stream=out)
        for done in range(10, 101, 10):
            progress.update(done)
            if done == 50:
                progress.note("x.jpg cannot be read: skipped.")
        progress.close()
    lines = plain_out.getvalue().splitlines()
    assert len(lines) == 11 and "\r" not in plain_out.getvalue()
    assert lines[0].startswith("10/100 images") and lines[-1].startswith("100/100 images")
    assert "x.jpg cannot be read: skipped." in lines
    assert (
        terminal_out.getvalue().count("\r") > 10 and "] 100/100 images" in terminal_out.getvalue()
    )
    short = io.StringIO()
    predict.Progress(20, long_after=32, stream=short).update(20)
    assert short.getvalue() == ""  # one batch or less: no progress at all


def _command(*args):
    """Runs `python -m keras_preact.predict ARGS` as a user's shell would (TensorFlow's own log
    level unset: the command quiets it)."""
    env = subprocess_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "keras_preact.predict", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=REPO,
    )


@pytest.mark.slow
def test_command_line(trained, folder, plain, tmp_path):
    path, _, _ = trained
    root, good, bad = folder
    out, features = tmp_path / "preds.csv", tmp_path / "emb.npy"
    proc = _command(
        f"--model_path={path}", f"--output={out}", f"--features={features}", "--top_k=2", root
    )
    assert proc.returncode == 0, proc.stderr
    errors = proc.stderr.splitlines()
    # One line per skipped image and the summary; nothing from TensorFlow (the device line
    # is ours, where there is no GPU).
    assert [line for line in errors if not line.startswith("No GPU found")] == [
        f"{bad} is not a JPEG, PNG, GIF or BMP image (its first bytes: "
        f"{open(bad, 'rb').read(8).hex(' ')}): skipped.",
        errors[-1],
    ]
    assert errors[-1].startswith(f"Predicted {len(good)} of {len(good) + 1} images in ")
    assert errors[-1].endswith(f"tta=none): {out}, {features}. 1 skipped (named above).")
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [line["path"] for line in table] == good
    assert [[line["class_1"], line["class_2"]] for line in table] == [
        [str(c) for c in row["classes"][:2]] for row in plain.rows
    ]
    assert "label_3" not in table[0]
    np.testing.assert_allclose(np.load(features), plain.features, atol=1e-5)


@pytest.mark.slow
def test_command_line_exits_non_zero_when_nothing_was_predicted(trained, folder):
    path, _, _ = trained
    _, _, bad = folder
    proc = _command(f"--model_path={path}", bad)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-2:] == [
        f"{bad} is not a JPEG, PNG, GIF or BMP image (its first bytes: "
        f"{open(bad, 'rb').read(8).hex(' ')}): skipped.",
        "predict: no image could be predicted (1 given, each named above).",
    ]
    assert proc.stdout == ""
