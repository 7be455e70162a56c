"""Training that survives its faults, each one real: a learning rate that makes the loss NaN, a
batch of inf pixels, a checkpoint cut short on disk, a real 6 MB filesystem (tmpfs) filling up,
stdout a file or a terminal (a pty). Multi-worker divergence runs two real processes."""

import contextlib
import glob
import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_training_distributed import _free_ports

from keras_preact import CIFARResNetV2, data, files, run_dir, training
from keras_preact.training import checkpoint_files
from keras_preact.training.loop import MAX_ROLLBACKS, Diverged

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = os.path.join(REPO, "recipes", "cifar.py")
TINY = dict(dataset="digits", depth=8, width=4, seed=0)
ANSI_OR_CR = re.compile(r"\x1b\[|\r")
SIZE = r"[\d.]+ (?:bytes|kB|MB)"
NONFINITE = r"(?:the loss was (?:nan|inf)|a gradient was not finite \(at a loss of [\d.e+-]+\))"


def _config(model_dir, **changes):
    """A digits run: depth 8, width 4, batch 32 (44 steps an epoch), a checkpoint every 20 steps."""
    settings = dict(TINY, batch_size=32, checkpoint_every=20, eval_every=0, verbose=0)
    return training.TrainConfig(model_dir=str(model_dir), **{**settings, **changes})


def _checkpoint_steps(model_dir):
    found = glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index"))
    return sorted(checkpoint_files.checkpoint_step(path[: -len(".index")]) for path in found)


def _assert_finite_checkpoints(model_dir):
    """Every checkpoint left in model_dir reads back whole, every float tensor finite."""
    steps = _checkpoint_steps(model_dir)
    assert steps
    for step in steps:
        reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints", f"ckpt-{step}"))
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype.is_floating:
                assert np.isfinite(reader.get_tensor(name)).all(), f"ckpt-{step}: {name}"
    return steps


# ------------------------------------------------------------------- divergence


def test_nan_loss_stops_at_its_step_and_leaves_only_finite_checkpoints(tmp_path):
    """A healthy run to step 40, then the same run at learning rate 1e8: the loss becomes NaN."""
    model_dir = tmp_path / "run"
    training.run(_config(model_dir, train_steps=40))
    model_file = (model_dir / run_dir.MODEL).read_bytes()
    metrics = (model_dir / run_dir.METRICS).read_text()
    with pytest.raises(Diverged) as caught:
        training.run(_config(model_dir, train_steps=200, learning_rate=1e8))
    step, message = caught.value.step, str(caught.value)
    assert 40 < step < 200, message
    steps = _assert_finite_checkpoints(model_dir)
    assert max(steps) < step  # nothing saved from the diverged step on
    assert re.fullmatch(
        rf"Training diverged at step {step}: {NONFINITE} at learning rate 2\.5e\+07; "
        rf"nothing from after step {max(steps)} was saved .* ckpt-{max(steps)}\. Lower "
        r"learning_rate, or rerun with on_nonfinite=rollback .*\.",
        message,
    ), message
    # The model files and metrics are the healthy run's; no temporary file anywhere.
    assert (model_dir / run_dir.MODEL).read_bytes() == model_file
    assert (model_dir / run_dir.METRICS).read_text() == metrics
    assert checkpoint_files.leftovers(model_dir / "checkpoints") == []


def _digits_trainer(model_dir, on_nonfinite, learning_rate=0.05, checkpoint_every=5, **kwargs):
    def build():
        keras.utils.set_random_seed(0)
        return CIFARResNetV2(
            8, width=4, classes=10, normalization="digits", classifier_activation=None
        )

    return training.Trainer(
        training.make_strategy("default"),
        build,
        lambda: training.CoupledSGD(learning_rate),
        global_batch_size=32,
        model_dir=str(model_dir),
        checkpoint_every=checkpoint_every,
        on_nonfinite=on_nonfinite,
        **{"verbose": 0, **kwargs},
    )


def _poisoned_digits(poisoned_step):
    """A fixed-order digits dataset of batches of 32 whose batch `poisoned_step` (from 1) is inf."""
    images, labels = data.digits_arrays("train")
    images = images[: 32 * 12].copy()
    images[32 * (poisoned_step - 1) : 32 * poisoned_step] = np.inf
    dataset = tf.data.Dataset.from_tensor_slices((images, labels[: 32 * 12].astype("int32")))
    return lambda ctx: dataset.batch(32).repeat()


def test_a_batch_of_inf_pixels_stops_the_run_or_is_rolled_back_and_skipped(tmp_path, capsys):
    poisoned = _poisoned_digits(8)
    stopped = _digits_trainer(tmp_path / "stop", "stop", steps_per_loop=4)
    with pytest.raises(Diverged) as caught:
        stopped.fit(poisoned, total_steps=12, steps_per_epoch=12)
    # steps_per_loop=4: one call runs from step 6 on; it ends after step 8, the poisoned one.
    assert caught.value.step == 8 and stopped.current_step == 8
    # Inf pixels: a NaN loss, or (here, as it happens) non-finite gradients of a finite loss.
    assert re.search(rf"at step 8: {NONFINITE}", str(caught.value)), str(caught.value)
    assert _assert_finite_checkpoints(tmp_path / "stop") == [5]

    rolled = _digits_trainer(tmp_path / "rollback", "rollback")
    rolled.fit(poisoned, total_steps=12, steps_per_epoch=12)
    err = capsys.readouterr().err
    assert re.search(
        rf"At step 8 {NONFINITE} at learning rate 0\.05: rolled back to step 5 "
        r"\(ckpt-5\); "
        r"the 3 batches since then are skipped \(rollback 1 of at most 3 in a row\)\.",
        err,
    ), err
    # The iterator went on: steps 6-12 of the new pass saw batches 9-12 and 1-3, never batch 8.
    assert rolled.current_step == 12 and int(rolled.optimizer.iterations.numpy()) == 12
    assert all(np.isfinite(w).all() for w in rolled.model.get_weights())
    assert _assert_finite_checkpoints(tmp_path / "rollback") == [5, 10, 12]
    assert [row["step"] for row in rolled.history] == [12]


def test_rollback_gives_up_after_three_in_a_row(tmp_path, capsys):
    trainer = _digits_trainer(tmp_path / "run", "rollback", checkpoint_every=1)
    trainer.fit(_poisoned_digits(100), total_steps=2, steps_per_epoch=2)  # ckpt-1, ckpt-2
    images, labels = data.digits_arrays("train")
    every_batch_inf = tf.data.Dataset.from_tensor_slices(
        (np.full_like(images[:32], np.inf), labels[:32].astype("int32"))
    )
    with pytest.raises(Diverged) as caught:
        trainer.fit(
            lambda ctx: every_batch_inf.batch(32).repeat(), total_steps=9, steps_per_epoch=9
        )
    assert caught.value.step == 3
    assert f"after {MAX_ROLLBACKS} rollbacks in a row" in str(caught.value)
    rollbacks = re.findall(r"rolled back to step 2 \(ckpt-2\)", capsys.readouterr().err)
    assert len(rollbacks) == MAX_ROLLBACKS
    assert _assert_finite_checkpoints(tmp_path / "run") == [1, 2]


class _OverflowAt(keras.optimizers.schedules.LearningRateSchedule):
    """0.05, but inf at step `step` (from 1): there, finite gradients make non-finite weights."""

    def __init__(self, step):
        self.step = step

    def __call__(self, iteration):
        return keras.ops.where(iteration + 1 == self.step, float("inf"), 0.05)


@pytest.mark.parametrize("overflow, kept", [(10, [5]), (12, [5, 10])])  # a checkpoint, the end
def test_weights_that_overflow_with_a_finite_loss_stop_or_roll_back(
    tmp_path, capsys, overflow, kept
):
    images, labels = data.digits_arrays("train")
    dataset = tf.data.Dataset.from_tensor_slices((images[:320], labels[:320].astype("int32")))
    for mode in ("stop", "rollback"):
        trainer = _digits_trainer(tmp_path / mode, mode, learning_rate=_OverflowAt(overflow))
        with pytest.raises(Diverged) as caught:
            trainer.fit(lambda ctx: dataset.batch(32).repeat(), total_steps=12, steps_per_epoch=6)
        # The step's loss and gradients were finite; its update was not. Nothing was saved,
        # evaluated or recorded from it.
        assert caught.value.step == overflow, str(caught.value)
        assert "the weights became non-finite (an update overflowed)" in str(caught.value)
        assert _assert_finite_checkpoints(tmp_path / mode) == kept
        assert [row["step"] for row in trainer.history] == [6]
    # Rolled back to the checkpoint (the schedule overflows at that step every time), then
    # gave up.
    assert f"after {MAX_ROLLBACKS} rollbacks in a row" in str(caught.value)
    err = capsys.readouterr().err
    rollbacks = re.findall(
        rf"At step {overflow} the weights became non-finite \(an update overflowed\) at learning "
        rf"rate inf: rolled back to step {kept[-1]} \(ckpt-{kept[-1]}\)",
        err,
    )
    assert len(rollbacks) == MAX_ROLLBACKS, err


# ----------------------------------------------------- checkpoints cut short


def _truncate(path, keep=0.5):
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


def test_a_truncated_latest_checkpoint_is_set_aside_and_the_run_resumes_before_it(tmp_path, capsys):
    model_dir = tmp_path / "run"
    training.run(_config(model_dir, train_steps=60))
    assert _checkpoint_steps(model_dir) == [20, 40, 60]
    (data_file,) = glob.glob(str(model_dir / "checkpoints" / "ckpt-60.data-*"))
    _truncate(data_file)
    capsys.readouterr()
    metrics = training.run(_config(model_dir, train_steps=60))
    out, err = capsys.readouterr()
    aside = model_dir / "checkpoints" / checkpoint_files.UNREADABLE
    assert re.search(
        rf"Unreadable checkpoint ckpt-60 \(.+\): set aside in {re.escape(str(aside))}; resuming "
        r"from ckpt-40, the newest readable one\.",
        err,
    ), err
    assert "Resuming from step 40 " in out
    assert (metrics["resumed_from_step"], metrics["steps"]) == (40, 60)
    assert sorted(os.listdir(aside)) == ["ckpt-60.data-00000-of-00001", "ckpt-60.index"]
    assert os.path.getsize(aside / os.path.basename(data_file)) < os.path.getsize(data_file) * 2
    assert _assert_finite_checkpoints(model_dir) == [20, 40, 60]  # a new, whole ckpt-60


@pytest.mark.parametrize("damage", ["index", "all"])
def test_unreadable_checkpoints_are_set_aside_down_to_a_readable_one_or_none(
    tmp_path, capsys, damage
):
    model_dir = tmp_path / "run"
    trainer = _digits_trainer(model_dir, "stop")
    trainer.fit(_poisoned_digits(100), total_steps=10, steps_per_epoch=10)  # ckpt-5, ckpt-10
    initial = _digits_trainer(tmp_path / "fresh", "stop").model.get_weights()
    checkpoints = model_dir / "checkpoints"
    _truncate(checkpoints / "ckpt-10.index", keep=0.3)
    if damage == "all":  # the older one's data cut short too
        _truncate(glob.glob(str(checkpoints / "ckpt-5.data-*"))[0])
    again = _digits_trainer(model_dir, "stop")
    restored = again.restore()
    err = capsys.readouterr().err
    if damage == "index":
        assert restored == 5 and "resuming from ckpt-5, the newest readable one" in err
        assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-5")
    else:
        assert restored == 0 and "no readable checkpoint is left" in err
        assert "ckpt-10 (" in err and "ckpt-5 (" in err
        assert tf.train.latest_checkpoint(checkpoints) is None
        # Nothing of the unreadable checkpoints reached the model: it is as built.
        for got, expected in zip(again.model.get_weights(), initial):
            np.testing.assert_array_equal(got, expected)
    assert len(os.listdir(checkpoints / checkpoint_files.UNREADABLE)) >= 2


@pytest.mark.parametrize(
    "error, where",
    [
        (tf.errors.UnavailableError(None, None, "gs:// is unavailable"), "restore"),
        (tf.errors.PermissionDeniedError(None, None, "storage.objects.get denied"), "check"),
        (MemoryError("out of memory"), "check"),
    ],
)
def test_a_storage_error_on_resume_is_raised_and_sets_nothing_aside(tmp_path, error, where):
    """Whole checkpoints that fail to read for the storage's or the machine's sake (injected:
    there is no gs:// here) stay where they are; the error is the run's."""
    model_dir = tmp_path / "run"
    trainer = _digits_trainer(model_dir, "stop")
    trainer.fit(_poisoned_digits(100), total_steps=10, steps_per_epoch=10)  # ckpt-5, ckpt-10
    checkpoints = model_dir / "checkpoints"
    before = sorted(os.listdir(checkpoints))
    again = _digits_trainer(model_dir, "stop")

    def fail(*args, **kwargs):
        raise error

    def translated(*args, **kwargs):  # what TensorFlow's checkpoint reader makes of any error
        raise tf.errors.DataLossError(None, None, "Unable to open table file")

    with mock.patch.object(again._checkpoint, "restore", side_effect=fail):
        if where == "check":  # the readers report data loss; the files' own reads, the error
            with (
                mock.patch.object(checkpoint_files.tf.train, "load_checkpoint", translated),
                mock.patch.object(checkpoint_files.tf.io.gfile, "GFile", side_effect=fail),
            ):
                with pytest.raises(type(error)):
                    again.restore()
        else:
            with pytest.raises(type(error)):
                again.restore()
    assert sorted(os.listdir(checkpoints)) == before
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-10")
    assert _digits_trainer(model_dir, "stop").restore() == 10


# ---------------------------------------------------------------- full disks


@pytest.fixture
def small_disk(tmp_path):
    """A real 6 MB filesystem (tmpfs); skipped where this process may not mount one (not root)."""
    path = tmp_path / "disk"
    path.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        pytest.skip("no mount command: the full-disk tests need a small real filesystem")
    if mounted.returncode:
        pytest.skip(f"cannot mount a 6 MB tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk, leave):
    """Fills `disk` with a file, leaving about `leave` bytes free; returns the file's path."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_checkpoint_that_does_not_fit_leaves_no_debris_and_the_run_resumes(small_disk):
    model_dir = small_disk / "run"
    trainer = _digits_trainer(model_dir, "stop", checkpoint_every=20)
    dataset = _poisoned_digits(100)
    trainer.fit(dataset, total_steps=40, steps_per_epoch=10)  # ckpt-20, ckpt-40
    size = sum(os.path.getsize(p) for p in glob.glob(str(model_dir / "checkpoints/ckpt-40.*")))
    filler = _fill(small_disk, leave=size // 2)
    with pytest.raises(files.DiskFullError) as caught:
        trainer.fit(dataset, total_steps=60, steps_per_epoch=10)
    message = str(caught.value)
    checkpoints = model_dir / "checkpoints"
    assert re.fullmatch(
        r"The disk is full \(No space left on device\): the checkpoint ckpt-60 did not fit in "
        rf"{re.escape(str(checkpoints))} \(about {SIZE} needed, {SIZE} free\)\. Its partial "
        r"files were removed\. The newest checkpoint, ckpt-40 \(step 40\), reads back whole: free "
        r"space and run the same command again to resume from step 40\.",
        message,
    ), message
    assert caught.value.errno == 28 and caught.value.filename == str(checkpoints / "ckpt-60")
    assert checkpoint_files.leftovers(checkpoints) == []
    assert _checkpoint_steps(model_dir) == [20, 40]
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-40")

    filler.unlink()
    again = _digits_trainer(model_dir, "stop", checkpoint_every=20)
    assert again.restore() == 40
    again.fit(dataset, total_steps=60, steps_per_epoch=10)
    assert _assert_finite_checkpoints(model_dir) == [20, 40, 60]


def test_a_model_file_that_does_not_fit_is_not_written(small_disk):
    model = CIFARResNetV2(8, width=16, classes=10)
    path = small_disk / run_dir.MODEL
    with run_dir.atomic_path(path) as tmp:
        model.save(tmp)
    before = path.read_bytes()
    _fill(small_disk, leave=len(before) // 3)
    with pytest.raises(files.DiskFullError) as caught:
        with run_dir.atomic_path(path, needed=len(before)) as tmp:
            model.save(tmp)
    assert re.fullmatch(
        r"The disk is full \(No space left on device\): model\.keras did not fit in "
        rf"{re.escape(str(small_disk))} \(about {SIZE} needed, {SIZE} free\)\. It was not "
        r"written; what was there before is unchanged\.",
        str(caught.value),
    ), str(caught.value)
    assert path.read_bytes() == before
    assert sorted(os.listdir(small_disk)) == ["filler", run_dir.MODEL]


def test_an_export_that_fills_the_disk_says_what_was_published(small_disk, tmp_path):
    """The SavedModel fits, the TFLite file does not: the error names the published version."""
    from export_helpers import tiny_model

    from keras_preact.export.pipeline import export_all
    from keras_preact.export.verify import directory_size

    model = tiny_model()  # 1,000 classes: a TFLite file of about 340 kB
    options = dict(model_name="tiny", tflite=("float32",), verify=False)
    probe = export_all(model, str(tmp_path / "probe"), **options)
    saved_model_bytes = directory_size(probe.saved_model_dir)
    tflite_bytes = os.path.getsize(probe.tflite["float32"])
    assert tflite_bytes > 200_000  # more than the slack below
    _fill(small_disk, leave=saved_model_bytes + 100_000)
    out = small_disk / "out"
    with pytest.raises(files.DiskFullError) as caught:
        export_all(model, str(out), **options)
    version = out / "tiny" / "1"
    assert re.fullmatch(
        rf"The disk is full \(No space left on device\): .*Published before it filled: "
        rf"{re.escape(str(version))}\. The rest was not \(its temporary folders were removed\): "
        r"free space and export again\.",
        str(caught.value),
    ), str(caught.value)
    served = tf.saved_model.load(str(version)).signatures["pixels"]  # whole, and in place
    probabilities = served(pixels=tf.zeros([1, 32, 32, 3]))["probabilities"]
    np.testing.assert_allclose(probabilities, model(np.zeros([1, 32, 32, 3])), atol=1e-6)
    assert not os.path.exists(out / "tflite" / "tiny" / "1")
    assert [n for n in os.listdir(out / "tflite" / "tiny") if n.startswith(".")] == []


def test_a_full_disk_reported_by_a_writer_also_names_what_was_published(tmp_path):
    """A writer that raises its own `DiskFullError` (a report, the ONNX file) gets the list too."""
    from keras_preact.export import pipeline

    options = pipeline.ExportOptions(model=None, output_dir=str(tmp_path), model_name="m")
    with pytest.raises(files.DiskFullError) as caught:
        with pipeline._export_guard(options, ["exported/m/1"]):
            raise files.DiskFullError("The disk is full: model.onnx did not fit.", "model.onnx")
    assert str(caught.value) == (
        "The disk is full: model.onnx did not fit. Published before it filled: exported/m/1. "
        "The rest was not (its temporary folders were removed): free space and export again."
    )
    assert caught.value.filename == "model.onnx"


# ------------------------------------------------------------- what is printed


def _fit_printing(trainer, stream):
    previous, sys.stdout = sys.stdout, stream
    try:
        trainer.fit(_poisoned_digits(100), total_steps=6, steps_per_epoch=3)
    finally:
        sys.stdout = previous


def test_progress_is_plain_lines_in_a_file_and_a_bar_in_a_terminal_or_notebook(tmp_path):
    log = io.StringIO()  # stdout redirected to a file: not a terminal
    _fit_printing(_digits_trainer(tmp_path / "file", "stop", verbose=1, log_every=2), log)
    text = log.getvalue()
    assert not ANSI_OR_CR.search(text), repr(text[:300])
    number = r"[\d.]+(?:e[+-]\d+)?"
    figures = rf"loss {number}, accuracy {number}, lr {number}, {number} images/s"
    expected = [
        "Epoch 1/2",
        rf"step 2/6 \(epoch 1/2\): {figures}",
        rf"epoch 1/2 ended at step 3/6: {figures}, {number} s",
        "Epoch 2/2",
        rf"step 4/6 \(epoch 2/2\): {figures}",
        rf"epoch 2/2 ended at step 6/6: {figures}, {number} s",
    ]
    lines = text.splitlines()
    assert len(lines) == len(expected), text
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), line

    master, slave = pty.openpty()  # a real terminal
    received = []
    reader = threading.Thread(target=_drain, args=(master, received), daemon=True)
    reader.start()
    with open(slave, "w", closefd=True) as terminal:
        _fit_printing(_digits_trainer(tmp_path / "tty", "stop", verbose=1), terminal)
    reader.join(timeout=10)
    shown = b"".join(received).decode("utf-8", "replace")
    assert "━" in shown and re.search(r"\r.*3/3.* - loss: [\d.]+ - accuracy: [\d.]+", shown)
    assert "ended at step" not in shown

    notebook = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})()
    _fit_printing(_digits_trainer(tmp_path / "notebook", "stop", verbose=1), notebook)
    assert "━" in notebook.getvalue() and "ended at step" not in notebook.getvalue()


def _drain(fd, chunks):
    with contextlib.suppress(OSError):
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    os.close(fd)


# ------------------------------------------------------ the recipe, end to end


def _recipe(model_dir, *args, log=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    command = [sys.executable, CIFAR, "--dataset=digits", "--depth=8", "--width=4", "--seed=0"]
    command += [f"--model_dir={model_dir}", "--batch_size=32", "--checkpoint_every=20", *args]
    with open(log, "w") if log else contextlib.nullcontext() as out:
        proc = subprocess.run(
            command,
            env=env,
            cwd=REPO,
            stdout=out or subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    return proc


@pytest.mark.slow
def test_recipe_logs_plainly_to_a_file_and_exits_with_one_line_on_divergence_and_a_full_disk(
    small_disk,
):
    """What a scheduler's log shows: plain lines; a NaN run exits 3, a full disk 4, one line each."""
    model_dir, log = small_disk / "run", small_disk.parent / "train.log"
    first = _recipe(model_dir, "--train_steps=40", "--log_every=10", log=log)
    assert first.returncode == 0, first.stderr[-3000:]
    text = log.read_text()
    assert not ANSI_OR_CR.search(text) and "Test accuracy:" in text
    assert [int(s) for s in re.findall(r"^step (\d+)/40 ", text, re.M)] == [10, 20, 30]
    assert re.search(r"^epoch 1/1 ended at step 40/40: loss [\d.]+, ", text, re.M)

    diverged = _recipe(model_dir, "--train_steps=200", "--learning_rate=1e8")
    assert diverged.returncode == 3, diverged.stderr[-3000:]
    errors = [line for line in diverged.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in diverged.stderr, diverged.stderr[-3000:]
    assert re.match(
        rf"Error: Training diverged at step \d+: {NONFINITE} at learning rate", errors[0]
    )
    assert "--on_nonfinite=rollback" in errors[0] and "Lower --learning_rate" in errors[0]
    assert max(_assert_finite_checkpoints(model_dir)) < 60

    size = sum(os.path.getsize(p) for p in glob.glob(str(model_dir / "checkpoints/ckpt-40.*")))
    _fill(small_disk, leave=size // 2)
    full = _recipe(model_dir, "--train_steps=80")
    assert full.returncode == 4, full.stderr[-3000:]
    assert "Traceback" not in full.stderr and "ResourceExhausted" not in full.stderr
    (error,) = [line for line in full.stderr.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: The disk is full (No space left on device): the checkpoint")
    assert "resume from step 40" in error
    assert checkpoint_files.leftovers(model_dir / "checkpoints") == []
    assert _assert_finite_checkpoints(model_dir) == [20, 40]


# ------------------------------------------------------------- multi-worker

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import keras
    from keras_preact import CIFARResNetV2, training

    strategy = training.make_strategy("multi_worker_mirrored")
    index, out = int(os.environ["WORKER_INDEX"]), sys.argv[1]
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (8 * 12, 16, 16, 3)).astype("float32")
    y = rng.randint(0, 10, len(x)).astype("int32")

    def train_fn(ctx):  # each worker its own 8 images a step; worker 1's 5th batch is inf
        own = x.copy()
        if ctx.input_pipeline_id == 1:
            own[8 * 4 : 8 * 5] = np.inf
        return tf.data.Dataset.from_tensor_slices((own, y)).batch(8).repeat()

    results = {}
    for mode in ("stop", "rollback"):
        def build():
            keras.utils.set_random_seed(1)
            return CIFARResNetV2(8, width=4, input_shape=(16, 16, 3), classifier_activation=None)

        trainer = training.Trainer(
            strategy, build, lambda: training.CoupledSGD(0.05), global_batch_size=16,
            model_dir=out + "_" + mode, checkpoint_every=3, verbose=0, on_nonfinite=mode,
        )
        try:
            trainer.fit(train_fn, total_steps=8, steps_per_epoch=8)
            results[mode] = {"finished": trainer.current_step}
        except training.loop.Diverged as e:
            results[mode] = {"diverged_at": e.step, "step": trainer.current_step}
        results[mode]["weights"] = float(sum(np.abs(w).sum() for w in trainer.model.get_weights()))
        trainer.close()
    with open(f"{out}_{index}.json", "w") as f:
        json.dump(results, f)
    """
)


@pytest.mark.slow
def test_nan_on_one_worker_stops_or_rolls_back_every_worker_at_the_same_step(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = str(tmp_path / "mw")
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=tf_config)
        env["WORKER_INDEX"] = str(index)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), out],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-4000:]
    chief, worker = (json.loads(open(f"{out}_{i}.json").read()) for i in range(2))
    # Only worker 1 read the inf batch; both stopped after that very step.
    assert chief["stop"]["diverged_at"] == worker["stop"]["diverged_at"] == 5
    assert chief["stop"]["step"] == worker["stop"]["step"] == 5
    assert _assert_finite_checkpoints(out + "_stop") == [3]
    # Rolled back together to step 3, both finished at step 8 with the same finite weights.
    assert chief["rollback"]["finished"] == worker["rollback"]["finished"] == 8
    assert chief["rollback"]["weights"] == worker["rollback"]["weights"]
    assert np.isfinite(chief["rollback"]["weights"])
    assert "rolled back to step 3 (ckpt-3)" in outputs[0][1]
    assert _assert_finite_checkpoints(out + "_rollback") == [3, 6, 8]
