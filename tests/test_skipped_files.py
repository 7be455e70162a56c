"""Corrupt images in an image folder: each reported once by its path, never inside a progress bar.

The folder holds real JPEG crops of scikit-learn's sample photos and three bad
files: a truncated JPEG (found only by decoding), an empty .jpg and a text
file named .png (both found from their first bytes when the folder is listed).
"""

import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from keras_preact.data import (
    dataset_info,
    make_dataset,
    pipeline,
    reset_skipped_images,
    skipped_image_names,
    skipped_images,
)
from keras_preact.data.sources.folder import bad_image_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET = os.path.join(REPO, "recipes", "imagenet.py")
NUM_GOOD_TRAIN = 10  # + the truncated JPEG: 11 // 4 = 2 steps per epoch (13 // 4 = 3 with all)


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    """(root, sorted paths of the 3 bad train files, path of the bad file sorted last)."""
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("bad_folder")
    photos = load_sample_images().images
    for split, count in (("train", NUM_GOOD_TRAIN), ("val", 4)):
        for i in range(count):
            folder = root / split / ("china", "flower")[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            crop = photos[i % 2][10 * i : 10 * i + 120, 10 * i : 10 * i + 160]
            tf.io.write_file(str(folder / f"{i}.jpg"), tf.io.encode_jpeg(crop))
    whole = tf.io.encode_jpeg(photos[0][:200, :300]).numpy()
    bad = {
        "train/china/half.jpg": whole[: len(whole) // 2],  # truncated: no end-of-image marker
        "train/flower/empty.jpg": b"",
        "train/flower/zz_notes.png": b"not an image, a text file named .png\n",  # last in order
    }
    for rel, payload in bad.items():
        (root / rel).write_bytes(payload)
    return root, sorted(str(root / rel) for rel in bad), str(root / "train/flower/zz_notes.png")


def test_a_folder_reports_each_bad_file_once_by_path(bad_folder):
    root, bad, last = bad_folder
    empty = str(root / "train/flower/empty.jpg")
    # Listing: the empty and the text file are known bad from their first bytes.
    paths = sorted(str(p) for p in (root / "train").glob("*/*"))
    assert bad_image_files(paths) == sorted([empty, last])
    info = dataset_info("folder", data_dir=str(root))
    assert info.num_examples == {"train": NUM_GOOD_TRAIN + 1, "val": 4}  # truncated counted
    # Training over several passes: every bad file once, by its path.
    reset_skipped_images()
    ds = make_dataset(
        "folder", "train", data_dir=str(root), batch_size=4, image_size=32, seed=0, repeat=True
    )
    passes = 4
    labels = [y for _, y in ds.take(passes * NUM_GOOD_TRAIN // 4)]
    assert sum(len(y) for y in labels) == passes * NUM_GOOD_TRAIN
    assert skipped_image_names() == bad and skipped_images() == 3
    assert sorted(pipeline.SKIPPED.take_unreported()) == bad
    assert pipeline.SKIPPED.take_unreported() == []
    # Evaluation in the stored order, whose very last file is bad: found at the stream's end.
    reset_skipped_images()
    eval_ds = make_dataset(
        "folder", "train", data_dir=str(root), batch_size=4, training=False, eval_crop_size=32
    )
    images = tf.concat([x for x, _ in eval_ds], 0)
    assert images.shape == (NUM_GOOD_TRAIN, 32, 32, 3)
    assert skipped_image_names() == bad


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A plain epoch line (stdout is not a terminal): "epoch 1/4 ended at step 2/8: loss 2.3, ..."
_EPOCH_LINE = re.compile(r"epoch \d+/\d+ ended at step \d+/\d+: loss [-+0-9.e]+, .*images/s.*")


def test_a_run_names_the_bad_files_once_in_skipped_files_and_keeps_the_bar_whole(
    tmp_path, bad_folder
):
    root, bad, _ = bad_folder
    model_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(
        [
            sys.executable,
            IMAGENET,
            "--dataset=folder",
            f"--data_dir={root}",
            f"--model_dir={model_dir}",
            "--depth=18",
            "--image_size=32",
            "--eval_crop_sizes=32",
            "--batch_size=4",
            "--train_steps=8",  # 4 epochs of 2 steps: the bad files are met on several passes
            "--seed=0",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, as on a terminal
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:]
    with open(model_dir / "skipped_files.txt") as f:
        assert f.read() == "".join(f"{path}\n" for path in bad)
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["skipped_images"] == 3 and metrics["steps_per_epoch"] == 2
    # Each name printed once, on its own line.
    lines = out.splitlines()
    for path in bad:
        assert sum(path in line for line in out.replace("\r", "\n").splitlines()) == 1, out
        assert f"Skipped an image that could not be read or decoded: {path}" in lines
    # Not a terminal: plain progress lines, whole, one per epoch; no bar frames, no escapes.
    assert "\r" not in out and not _ANSI.search(out), out[-2000:]
    epochs = [line for line in lines if _EPOCH_LINE.match(line)]
    assert len(epochs) == 4, out[-2000:]


def test_a_run_names_its_first_10_skipped_images_then_counts_the_rest(tmp_path, capsys):
    from keras_preact.training.run import _SkippedImages

    report = _SkippedImages(str(tmp_path), chief=True)
    for i in range(12):
        pipeline.SKIPPED.add(f"/data/bad{i:02d}.jpg")
    report.report()
    pipeline.SKIPPED.add("/data/bad00.jpg")  # met again on a later pass: not new
    pipeline.SKIPPED.add("/data/late.jpg")
    report.report()
    report.report()
    lines = capsys.readouterr().err.splitlines()
    listing = str(tmp_path / "skipped_files.txt")
    assert lines == [
        *(
            f"Skipped an image that could not be read or decoded: /data/bad{i:02d}.jpg"
            for i in range(10)
        ),
        f"... and 2 more (see {listing})",
        f"... and 1 more (see {listing})",
    ]
    with open(listing) as f:
        assert f.read().splitlines() == [
            *(f"/data/bad{i:02d}.jpg" for i in range(12)),
            "/data/late.jpg",
        ]
    assert report.count == 13
    # A fresh run in the same directory starts without the old list; a resumed one keeps it.
    assert _SkippedImages(str(tmp_path), chief=True, resuming=True).count == 13
    assert _SkippedImages(str(tmp_path), chief=True).count == 0 and not os.path.exists(listing)
