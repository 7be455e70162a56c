"""recipes/cifar.py and recipes/imagenet.py end to end, as a user runs them (real processes)."""

import csv
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from foreign_nets import timm_state_dict
from safetensors.numpy import load_file, save_file
from test_pretrained import assert_holds_timm_backbone

import keras_preact
from keras_preact import data, preprocessing, run_dir, training
from keras_preact.data import crops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = os.path.join(REPO, "recipes", "cifar.py")
IMAGENET = os.path.join(REPO, "recipes", "imagenet.py")
TINY = ["--dataset=digits", "--depth=8", "--width=4", "--seed=0"]


def _env():
    """The environment of a user's shell: no TF_CONFIG, no TF_CPP_MIN_LOG_LEVEL (the recipes quiet TF)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


# TensorFlow's start-up lines on a machine without a GPU, which our commands hide.
NOISE = ("cuInit", "E0000", "cudart_stub", "All log messages before absl")


def _run(script, *args, timeout=300):
    return subprocess.run(
        [sys.executable, script, *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _scalars(log_dir, tag):
    """{step: value} of a TensorBoard scalar in every event file under log_dir."""
    values = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def _history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------- digits, end to end


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("recipes") / "digits")
    proc = _run(
        CIFAR,
        *TINY,
        f"--model_dir={model_dir}",
        "--batch_size=64",
        "--train_steps=30",
        "--checkpoint_every=10",
        f"--export_dir={model_dir}/exported",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    return model_dir, proc, metrics


@pytest.mark.slow
def test_cifar_recipe_reports_held_out_accuracy_it_can_reproduce(digits_run):
    model_dir, proc, metrics = digits_run
    last = proc.stdout.strip().splitlines()[-1]
    printed = re.fullmatch(
        r"Test accuracy: (\d+\.\d\d)% \(top-1 on 360 held-out digits test images\)", last
    )
    assert printed, last
    assert float(printed.group(1)) == pytest.approx(100 * metrics["test_accuracy"], abs=0.006)
    assert (metrics["steps"], metrics["test_examples"], metrics["eval_split"]) == (30, 360, "test")

    # Recompute on the held-out split from the saved model, with numpy.
    images, labels = data.digits_arrays("test")
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    probs = model.predict(images, batch_size=120, verbose=0)
    ranked = np.argsort(-probs, axis=1)
    assert metrics["test_top1"] == pytest.approx(np.mean(ranked[:, 0] == labels), abs=1e-9)
    assert metrics["test_top5"] == pytest.approx(
        np.mean((ranked[:, :5] == labels[:, None]).any(axis=1)), abs=1e-9
    )
    nll = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    assert metrics["test_loss"] == pytest.approx(nll, rel=1e-3)

    # The weights file loads into the builder call that spec.json records.
    spec = run_dir.read_spec(model_dir)
    assert spec.builder == "CIFARResNetV2"
    assert {k: spec.kwargs[k] for k in ("depth", "width", "classes", "normalization")} == {
        "depth": 8,
        "width": 4,
        "classes": 10,
        "normalization": "digits",
    }
    assert (spec.normalization, spec.image_size, spec.crop_size, spec.resize_size()) == (
        "digits",
        32,
        32,
        32,
    )
    rebuilt = spec.build(weights=os.path.join(model_dir, run_dir.WEIGHTS))
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0), probs, atol=1e-5)
    class_names = data.dataset_info("digits").class_names
    assert tuple(spec.labels) == class_names
    with open(os.path.join(model_dir, run_dir.LABELS)) as f:
        assert tuple(f.read().splitlines()) == class_names


@pytest.mark.slow
def test_cifar_recipe_exports_and_verifies_when_asked(digits_run):
    model_dir, proc, _ = digits_run
    exported = os.path.join(model_dir, "exported")
    assert os.path.exists(os.path.join(exported, "digits", "1", "saved_model.pb"))
    with open(os.path.join(exported, "digits", "1", "assets.extra", "labels.txt")) as f:
        assert f.read().splitlines() == [str(i) for i in range(10)]
    assert os.path.exists(os.path.join(exported, "tflite", "digits", "1", "float32.tflite"))
    # The export summary comes before the accuracy line, which stays last.
    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("SavedModel") for line in lines[:-1])
    assert lines[-1].startswith("Test accuracy:")


@pytest.mark.slow
def test_recipe_and_export_command_start_quietly_on_a_cpu(digits_run, tmp_path):
    """No TensorFlow start-up noise, one plain device line, progress frames whole."""
    model_dir, proc, _ = digits_run
    export = subprocess.run(
        [sys.executable, "-m", "export", f"--model_dir={model_dir}", f"--output_dir={tmp_path}"]
        + ["--tflite=int8"],  # int8: the converter and calibration have their say too
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    outputs = {"recipe": proc.stdout + proc.stderr, "export": export.stdout + export.stderr}
    for command, output in outputs.items():
        noisy = [line for line in output.splitlines() if any(n in line for n in NOISE)]
        assert not noisy, f"{command}: {noisy[:3]}"
        # The TFLite converter's and interpreter's own notices are hidden too.
        assert "fully_quantize" not in output and "XNNPACK delegate" not in output, command
    if not tf.config.list_physical_devices("GPU"):
        assert proc.stdout.count("No GPU found: running on the CPU") == 1
        assert export.stderr.count("No GPU found: running on the CPU") == 1
    # Not a terminal (a pipe, as a scheduler's log file): plain lines, no bar frames.
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout and "━" not in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    for line in lines:
        assert re.fullmatch(
            r"epoch \d/2 ended at step \d+/30: loss [\d.]+, accuracy [\d.]+, lr [\d.e-]+, "
            r"[\d.]+ images/s, [\d.]+ s",
            line,
        ), line
    # The export summary says which images the figures come from.
    assert "checked against the Keras model on the 14 sample photos" in export.stdout
    assert "int8 calibrated on 100 images: the run's digits training images" in export.stdout


@pytest.mark.slow
def test_each_epoch_line_shows_the_epoch_mean_loss(digits_run):
    """Each epoch's plain line shows what history.csv records for the epoch (so does the last
    frame of the bar in a terminal: tests/test_training_faults.py)."""
    model_dir, proc, _ = digits_run
    rows = _history(model_dir)
    shown = re.findall(
        r"^epoch \d/\d ended at step (\d+)/\d+: loss ([\d.]+), accuracy ([\d.]+)", proc.stdout, re.M
    )
    assert len(shown) == len(rows) == len(re.findall(r"^Epoch \d/2$", proc.stdout, re.M))
    for (step, loss, accuracy), row in zip(shown, rows):
        assert int(step) == int(row["step"])
        assert float(loss) == pytest.approx(float(row["loss"]), abs=6e-5)
        assert float(accuracy) == pytest.approx(float(row["accuracy"]), abs=6e-5)


@pytest.mark.slow
def test_cifar_recipe_writes_history_logs_and_checkpoints(digits_run):
    model_dir, _, _ = digits_run
    rows = _history(model_dir)
    # 1,437 training digits // 64 = 22 steps per epoch: epochs end at steps 22 and 30.
    assert [int(r["step"]) for r in rows] == [22, 30]
    assert all(r["val_top1"] != "" for r in rows)
    # The paper's CIFAR shape over 30 steps at batch 64: lr 0.1 * 64/128 = 0.05,
    # / 10 at 50% (step 15) and 75% (step 22). TensorBoard logs, at step s, the
    # learning rate step s ran with.
    lrs = _scalars(os.path.join(model_dir, "logs", "train"), "learning_rate")
    expected = {s: 0.05 if s <= 15 else 0.005 if s <= 22 else 0.0005 for s in range(1, 31)}
    assert lrs.keys() == expected.keys()
    np.testing.assert_allclose([lrs[s] for s in expected], list(expected.values()), rtol=1e-6)
    assert sorted(_scalars(os.path.join(model_dir, "logs", "eval"), "top1")) == [22, 30]
    ckpts = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    assert [c for c in ckpts if c.endswith(".index")] == [
        "ckpt-10.index",
        "ckpt-20.index",
        "ckpt-30.index",
    ]
    leftovers = [n for n in os.listdir(model_dir) if ".tmp" in n]
    assert leftovers == []


@pytest.mark.slow
def test_resuming_with_other_settings_is_refused(digits_run):
    model_dir, _, _ = digits_run
    config = training.TrainConfig(
        dataset="digits", model_dir=model_dir, depth=14, width=4, batch_size=64, train_steps=30
    )
    with pytest.raises(training.ConfigError, match="depth: 8 there, 14 now"):
        training.run(config)


# ----------------------------------------------------------------- kill test

# The interrupted runs' length: long enough that a signal sent at step 20 or so lands well
# before the end (a step takes about 20 ms here), short enough that the resumed run is quick.
STEPS = 100


def _start_cifar(model_dir, checkpoint_every, *extra, env=None):
    """Starts a STEPS-step CIFAR-recipe run in the background; returns its arguments and process."""
    args = [
        *TINY,
        f"--model_dir={model_dir}",
        "--batch_size=32",
        f"--train_steps={STEPS}",
        f"--checkpoint_every={checkpoint_every}",
        "--eval_every=0",
        "--verbose=0",
        *extra,
    ]
    proc = subprocess.Popen(
        [sys.executable, CIFAR, *args],
        env=env or _env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return args, proc


def _wait_for(path, procs, seconds=240):
    """Waits until `path` exists (or a process ended, or time is up)."""
    deadline = time.time() + seconds
    while not os.path.exists(path) and all(p.poll() is None for p in procs):
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _interrupted_cifar_run(model_dir, checkpoint_every, started, *signals):
    """Starts a STEPS-step CIFAR-recipe run, waits until `started` exists, sends `signals`.

    Returns the recipe's arguments (to run it again) and the process's (returncode, stderr).
    """
    args, proc = _start_cifar(model_dir, checkpoint_every)
    _wait_for(started, [proc])
    if signals[0] != signal.SIGKILL:
        time.sleep(0.3)  # a few steps in
    for sig in signals:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    return args, (proc.returncode, stderr)


def test_killed_run_resumes_at_its_step_and_learning_rate(tmp_path):
    model_dir = str(tmp_path / "killed")
    state = os.path.join(model_dir, "checkpoints", "checkpoint")
    args, (returncode, _) = _interrupted_cifar_run(model_dir, 20, state, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(model_dir, "metrics.json")), "finished before the kill"
    killed_at = int(tf.train.latest_checkpoint(os.path.dirname(state)).rsplit("-", 1)[1])
    assert 20 <= killed_at < STEPS

    # --remat is how a run trains, not what it trains: a resumed run may turn it on.
    again = _run(CIFAR, *args, "--remat")
    assert again.returncode == 0, again.stderr[-4000:]
    resumed = re.search(r"Resuming from step (\d+) \(learning rate ([0-9.e-]+)\)", again.stdout)
    assert resumed, again.stdout[-2000:]
    step = int(resumed.group(1))
    assert step == killed_at
    # Batch 32 over 100 steps: lr 0.1 * 32/128 = 0.025 (a tenth for the first 0.625% of the
    # run: 1 step), / 10 at 50% and 75% of the run (steps 50 and 75).
    assert STEPS == 100
    expected_lr = 0.025 if step < 50 else 0.0025 if step < 75 else 0.00025
    assert float(resumed.group(2)) == pytest.approx(expected_lr, rel=1e-3)

    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert (metrics["steps"], metrics["resumed_from_step"]) == (STEPS, step)
    assert metrics["final_learning_rate"] == pytest.approx(0.00025, rel=1e-6)
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == STEPS
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == STEPS
    # The restarted process logged steps step+1 .. STEPS and nothing before.
    files = sorted(glob.glob(os.path.join(model_dir, "logs", "train", "events.*")))
    second = {}
    for event in tf.compat.v1.train.summary_iterator(files[-1]):
        for value in event.summary.value:
            if value.tag == "learning_rate":
                second[event.step] = float(tf.make_ndarray(value.tensor))
    assert sorted(second) == list(range(step + 1, STEPS + 1))
    assert second[step + 1] == pytest.approx(expected_lr, rel=1e-6)
    steps = [int(r["step"]) for r in _history(model_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
    with open(os.path.join(model_dir, "model.keras"), "rb") as f, zipfile.ZipFile(f) as saved:
        config = saved.read("config.json").decode()
    assert '"remat": true' not in config and '"remat": false' in config  # saved plain


def test_ctrl_c_stops_at_a_checkpoint_of_the_current_step(tmp_path):
    """Ctrl-C between checkpoints loses no steps: the run saves where it is and resumes there.

    SIGTERM takes the same path (tests/test_training.py checks that it is caught the same way).
    """
    sig, returncode = signal.SIGINT, 130
    model_dir = str(tmp_path / "stopped")
    started = os.path.join(model_dir, "logs", "train")  # written from the first step on
    # No periodic checkpoint before the end: only the signal's own can make a resume possible.
    args, (code, stderr) = _interrupted_cifar_run(model_dir, 1000, started, sig)
    assert code == returncode, stderr[-3000:]
    stopped = re.search(rf"{sig.name}: stopped at step (\d+) with a checkpoint", stderr)
    assert stopped, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    step = int(stopped.group(1))
    assert 0 < step < STEPS
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert int(latest.rsplit("-", 1)[1]) == step
    assert not os.path.exists(os.path.join(model_dir, "metrics.json"))

    again = _run(CIFAR, *args)
    assert again.returncode == 0, again.stderr[-4000:]
    assert re.search(rf"Resuming from step {step} ", again.stdout), again.stdout[-2000:]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f)["steps"] == STEPS


def _read_until(stream, text, seconds=240):
    """Reads lines from `stream` until one contains `text`; returns the lines read."""
    deadline, lines = time.time() + seconds, []
    while time.time() < deadline:
        line = stream.readline()
        assert line, f"the stream ended before {text!r}: {''.join(lines)[-3000:]}"
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} in {seconds} s")


def test_second_ctrl_c_aborts_at_once_without_a_checkpoint(tmp_path):
    """Ctrl-C twice aborts in the middle of a long step, without waiting for it or saving."""
    model_dir = str(tmp_path / "aborted")
    # One tf.function call runs all 1000 steps (tens of seconds here): the "current step".
    long_step = ("--train_steps=1000", "--steps_per_loop=1000", "--steps_per_epoch=1000")
    _, proc = _start_cifar(model_dir, 1000, *long_step, "--verbose=1")
    try:
        _read_until(proc.stdout, "Epoch 1/1")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _read_until(proc.stderr, "SIGINT: stopping after the current step")
        proc.send_signal(signal.SIGINT)
        aborted = time.time()
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert time.time() - aborted < 10
    assert "Second Ctrl-C: aborted without a checkpoint." in stderr
    assert "stopped at step" not in stderr and "Traceback" not in stderr
    assert not os.path.exists(os.path.join(model_dir, "checkpoints", "checkpoint"))


def test_ctrl_c_on_one_worker_stops_every_worker_at_a_checkpoint(tmp_path):
    """Two multi-worker processes on localhost: Ctrl-C on the non-chief stops both at one step."""
    from test_training_distributed import _free_ports

    model_dir = str(tmp_path / "cluster")
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}

    def start_workers():
        runs = []
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = dict(_env(), TF_CONFIG=json.dumps(config))
            flags_ = ("--strategy=multi_worker_mirrored", "--train_steps=150")
            runs.append(_start_cifar(model_dir, 1000, *flags_, env=env)[1])
        return runs

    def finish(procs):
        try:
            return [p.communicate(timeout=240) for p in procs]
        finally:
            for p in procs:
                p.kill()

    chief, worker = procs = start_workers()
    _wait_for(os.path.join(model_dir, "logs", "train"), procs)
    time.sleep(0.5)
    worker.send_signal(signal.SIGINT)
    (_, chief_err), (_, worker_err) = finish(procs)
    assert (chief.returncode, worker.returncode) == (143, 130), (
        chief_err[-3000:] + worker_err[-3000:]
    )
    assert "SIGINT: stopping after the current step" in worker_err
    stopped = re.search(r"Another worker received a stop signal: stopped at step (\d+)", chief_err)
    assert stopped, chief_err[-3000:]
    step = int(stopped.group(1))
    assert 0 < step < 150
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert int(latest.rsplit("-", 1)[1]) == step

    procs = start_workers()
    (chief_out, chief_err), _ = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], chief_err[-3000:]
    assert re.search(rf"Resuming from step {step} ", chief_out), chief_out[-2000:]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f)["steps"] == 150


# ------------------------------------------------------------------ bad input


@pytest.mark.slow
def test_bad_flag_value_is_a_clear_error(tmp_path):
    proc = _run(CIFAR, "--dataset=digits", f"--model_dir={tmp_path / 'm'}", "--strategy=horovod")
    assert proc.returncode != 0
    assert "--strategy" in proc.stderr and "should be one of" in proc.stderr
    assert "mirrored" in proc.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_data_dir_without_the_data_is_a_clear_error(tmp_path):
    empty = tmp_path / "no_cifar_here"
    empty.mkdir()
    proc = _run(CIFAR, "--dataset=cifar10", f"--data_dir={empty}", f"--model_dir={tmp_path / 'm'}")
    assert proc.returncode == 1
    assert "Error:" in proc.stderr and str(empty) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------- imagenet recipe, photos


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Two classes of JPEG crops of scikit-learn's sample photos, in train/ and val/."""
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("photos")
    for name, photo in zip(("china", "flower"), load_sample_images().images):
        for split, offsets in (("train", (0, 40, 80, 120)), ("val", (20, 100))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, off in enumerate(offsets):
                crop = photo[off : off + 200, off : off + 300]
                tf.io.write_file(str(folder / f"{i}.jpg"), tf.io.encode_jpeg(crop))
    return root


@pytest.mark.slow
def test_imagenet_recipe_evaluates_at_every_crop_size(tmp_path, photo_folder):
    model_dir = tmp_path / "imagenet"
    proc = _run(
        IMAGENET,
        "--dataset=folder",
        f"--data_dir={photo_folder}",
        f"--model_dir={model_dir}",
        "--depth=18",
        "--image_size=64",
        "--eval_crop_sizes=64,96",
        "--batch_size=4",
        "--train_steps=3",
        "--seed=0",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["test_examples"] == 4 and metrics["eval_split"] == "val"
    model = keras.models.load_model(model_dir / "model.keras")
    assert model.output_shape == (None, 2)
    files = sorted((photo_folder / "val").glob("*/*.jpg"))
    labels = np.array([0 if f.parent.name == "china" else 1 for f in files])
    for size in (64, 96):
        batch = np.stack(
            [crops.eval_crop(crops.decode_image(tf.io.read_file(str(f))), size) for f in files]
        )
        probs = model.predict(batch, verbose=0)
        top1 = np.mean(np.argmax(probs, axis=1) == labels)
        assert metrics[f"test_top1_{size}"] == pytest.approx(top1, abs=1e-9)
        nll = -np.mean(np.log(probs[np.arange(4), labels]))
        assert metrics[f"test_loss_{size}"] == pytest.approx(nll, rel=1e-3)
    assert metrics["test_loss_64"] != metrics["test_loss_96"]
    with open(model_dir / "labels.txt") as f:
        assert f.read().splitlines() == ["china", "flower"]


# ------------------------------------------- imagenet recipe, pretrained weights


def _timm_file(path, classes):
    """A timm ResNet-18 checkpoint with random weights (`.safetensors`, as timm publishes)."""
    state = timm_state_dict(18, np.random.default_rng(0), classes=classes)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return str(path)


def _val_photos(photo_folder):
    """The folder's val images and labels (classes are the sorted folder names)."""
    files = sorted((photo_folder / "val").glob("*/*.jpg"))
    names = sorted({f.parent.name for f in files})
    return files, np.array([names.index(f.parent.name) for f in files])


@pytest.mark.slow
def test_imagenet_recipe_fine_tunes_from_a_converted_checkpoint(tmp_path, photo_folder):
    weights = _timm_file(tmp_path / "model.safetensors", classes=1000)
    model_dir = tmp_path / "finetuned"
    args = [
        "--dataset=folder",
        f"--data_dir={photo_folder}",
        f"--model_dir={model_dir}",
        "--depth=18",
        f"--weights={weights}",
        "--schedule=finetune",
        "--image_size=64",
        "--eval_crop_sizes=64",
        "--batch_size=4",
        "--train_steps=3",
        "--checkpoint_every=1",  # ckpt-1: after step 1, which runs at learning rate 0
        "--seed=0",
    ]
    proc = _run(IMAGENET, *args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # 1,000-class checkpoint, 2-class folder: the backbone loads, the head starts fresh.
    assert "loaded the backbone" in proc.stderr
    spec = run_dir.read_spec(model_dir)
    # The run's weights after its first step (learning rate 0, below) against the file's
    # tensors: kernels, BN gamma and beta unchanged, moving statistics one average step on.
    first = spec.build()
    ckpt = os.path.join(model_dir, "checkpoints", "ckpt-1")
    tf.train.Checkpoint(model=first).read(ckpt).assert_existing_objects_matched()
    assert_holds_timm_backbone(first, load_file(weights), moving_momentum=0.9)  # timm's BN
    assert spec.kwargs["layout"]["name"] == "timm" and "weights" not in spec.kwargs
    assert spec.eval_preprocessing == {"interpolation": "bilinear", "crop_fraction": None}
    assert (spec.normalization, spec.crop_size, spec.resize_size()) == ("tf", 64, 73)
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["weights"] == weights and metrics["steps"] == 3
    # finetune at batch 4 over 3 steps: peak 0.01 * 4/256, warm-up 1 step from 0, cosine to 0.
    peak = 0.01 * 4 / 256
    lrs = _scalars(os.path.join(model_dir, "logs", "train"), "learning_rate")
    np.testing.assert_allclose([lrs[s] for s in (1, 2, 3)], [0, peak, peak / 2], atol=1e-9)

    # model.weights.h5 in the builder spec.json names = model.keras.
    files, _ = _val_photos(photo_folder)
    batch = np.stack(
        [crops.eval_crop(crops.decode_image(tf.io.read_file(str(f))), 64) for f in files]
    )
    saved = keras.models.load_model(model_dir / "model.keras").predict(batch, verbose=0)
    rebuilt = spec.build(weights=str(model_dir / run_dir.WEIGHTS))
    np.testing.assert_allclose(rebuilt.predict(batch, verbose=0), saved, atol=1e-5)

    # The same command again resumes: the checkpoint wins over --weights (not even read).
    again = _run(IMAGENET, *args)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Resuming from step 3" in again.stdout
    assert "loaded the backbone" not in again.stderr
    resumed = keras.models.load_model(model_dir / "model.keras").predict(batch, verbose=0)
    np.testing.assert_allclose(resumed, saved, atol=1e-6)


@pytest.mark.slow
def test_the_whole_toolbox_trains_evaluates_and_saves_the_weight_average(tmp_path, photo_folder):
    """rsb_a3 with every toolbox flag from a timm ResNet-18 file: the recipe's values where no
    flag is given, the saved model is the checkpoint's weight average, and the final
    evaluation is the mean softmax over each val crop and its mirror."""
    weights = _timm_file(tmp_path / "model.safetensors", classes=1000)
    model_dir = tmp_path / "toolbox"
    proc = _run(
        IMAGENET,
        "--dataset=folder",
        f"--data_dir={photo_folder}",
        f"--model_dir={model_dir}",
        "--depth=18",
        f"--weights={weights}",
        "--recipe=rsb_a3",
        "--label_smoothing=0.1",
        "--mixup_alpha=0.2",
        "--random_erasing=0.25",
        "--ema_decay=0.5",
        "--gradient_accumulation_steps=2",
        "--drop_path_rate=0.05",
        "--tta=flip",
        "--image_size=48",
        "--eval_crop_sizes=64",
        "--batch_size=4",
        "--train_steps=3",
        "--seed=0",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "eval (EMA)" in proc.stdout
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    settings = metrics["recipe"]
    assert (settings["optimizer"], settings["loss"], settings["schedule"]) == (
        "lamb",
        "bce",
        "cosine",
    )
    assert (settings["mixup_alpha"], settings["cutmix_alpha"], settings["randaugment"]) == (
        0.2,
        1.0,
        True,
    )
    assert settings["randaugment_magnitude"] == 6.0 and settings["image_size"] == 48
    # LAMB's 8e-3 at batch 2048, scaled by the square root of 4 / 2048.
    assert metrics["peak_learning_rate"] == pytest.approx(8e-3 * (4 / 2048) ** 0.5)
    assert metrics["saved_weights"] == "ema" and "test_top1_raw" in metrics

    saved = keras.models.load_model(model_dir / "model.keras")
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints"))
    floats = [w for w in saved.weights if w.dtype == "float32"]
    for i, weight in enumerate(floats):
        average = reader.get_tensor(f"ema/averages/{i}/.ATTRIBUTES/VARIABLE_VALUE")
        np.testing.assert_array_equal(weight.numpy(), average, err_msg=weight.path)

    files, labels = _val_photos(photo_folder)
    batch = np.stack(
        [crops.eval_crop(crops.decode_image(tf.io.read_file(str(f))), 64) for f in files]
    )
    probs = (saved.predict(batch, verbose=0) + saved.predict(batch[:, :, ::-1], verbose=0)) / 2
    assert metrics["test_top1"] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=1e-9)
    nll = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    assert metrics["test_loss"] == pytest.approx(nll, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "source"])
def test_imagenet_recipe_eval_only_measures_the_weights_as_given(
    tmp_path, photo_folder, monkeypatch, kind
):
    """--eval_only on a 2-class timm checkpoint: a local file, or a named source (mirrored)
    evaluated with fb.resnet.torch's ten crops (--tta=ten_crop: the mean softmax of the views)."""
    weights = _timm_file(tmp_path / "two_classes.safetensors", classes=2)
    if kind == "source":  # served from a local mirror, with the source's eval protocol
        weights = keras_preact.weights.DEFAULT_SOURCES[18]
        source = keras_preact.weights.get_source(weights)
        mirrored = tmp_path / "mirror" / source.mirror_path
        mirrored.parent.mkdir(parents=True)
        os.rename(tmp_path / "two_classes.safetensors", mirrored)
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
        monkeypatch.setenv(keras_preact.weights.MIRROR_ENV, (tmp_path / "mirror").as_uri())
    model_dir = tmp_path / "eval"
    proc = _run(
        IMAGENET,
        "--dataset=folder",
        f"--data_dir={photo_folder}",
        f"--model_dir={model_dir}",
        "--depth=18",
        f"--weights={weights}",
        "--eval_only",
        "--eval_crop_sizes=64,80",
        "--batch_size=4",
        *(["--tta=ten_crop"] if kind == "source" else []),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "loaded the backbone" not in proc.stderr  # the 2-class head fits: all of it loads
    assert sorted(os.listdir(model_dir)) == ["metrics.json"]
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["weights"] == weights and metrics["test_examples"] == 4
    published = {k: v for k, v in metrics.items() if k.startswith("published_top")}
    if kind == "file":  # no source: the default protocol, no published figures
        assert published == {}
    else:
        assert published["published_top1_224"] == pytest.approx(source.accuracy[224][0] / 100)

    model = keras_preact.ResNet18V2(weights=weights, classes=2)
    protocol = preprocessing.eval_preprocessing(model)
    assert metrics["eval_preprocessing"] == protocol
    expected = ("bilinear", None) if kind == "file" else ("bicubic", source.crop_fraction)
    assert (protocol["interpolation"], protocol["crop_fraction"]) == expected
    files, labels = _val_photos(photo_folder)
    options = {k: protocol[k] for k in ("interpolation", "crop_fraction")}
    views = crops.ten_crop if kind == "source" else crops.eval_crop
    for size in (64, 80):
        batch = np.stack(
            [views(crops.decode_image(tf.io.read_file(str(f))), size, **options) for f in files]
        )
        probs = model.predict(batch.reshape([-1, size, size, 3]), verbose=0)
        probs = probs.reshape([len(files), -1, 2]).mean(axis=1)
        assert metrics[f"test_top1_{size}"] == np.mean(np.argmax(probs, axis=1) == labels)
        nll = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
        assert metrics[f"test_loss_{size}"] == pytest.approx(nll, rel=1e-3)
    assert proc.stdout.strip().splitlines()[-1].startswith("Test accuracy:")


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, flags_, expected",
    [
        (IMAGENET, ["--eval_only"], ["--eval_only", "--weights"]),
        (IMAGENET, ["--weights={timm}", "--layout=paper"], ["--weights=", "--layout='timm'"]),
        (CIFAR, ["--weights={timm}"], ["--weights=", "ImageNet weights"]),
    ],
    ids=["eval_only_without_weights", "layout_against_weights", "cifar_with_imagenet_weights"],
)
def test_bad_weights_flags_are_one_line_errors(tmp_path, recipe, flags_, expected):
    timm = tmp_path / "model.safetensors"
    timm.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14)  # a safetensors header
    dataset = "--dataset=folder" if recipe == IMAGENET else "--dataset=digits"
    model_dir = tmp_path / "m"
    proc = _run(
        recipe,
        dataset,
        f"--data_dir={tmp_path}",
        "--depth=18" if recipe == IMAGENET else "--depth=8",
        f"--model_dir={model_dir}",
        *[f.format(timm=timm) for f in flags_],
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and all(word in errors[0] for word in expected), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not model_dir.exists()
