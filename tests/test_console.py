"""What the command lines share (keras_preact.console): quiet start, -v, --help that lists flags."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from keras_preact import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("cuInit", "E0000", "cudart_stub", "All log messages before absl")


def _command(*args):
    """Runs a command from the checkout as a user's shell would (no TF_CPP_MIN_LOG_LEVEL)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, cwd=REPO, timeout=120
    )


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/venv/bin/keras-preact-cifar", "--depth=20"], True),
        (["recipes/imagenet.py"], True),
        ([os.path.join(REPO, "export", "__main__.py")], True),
        (["/home/me/train.py"], False),
        (["cifar.py"], False),  # a user's own script of that name
        ([], False),
    ],
)
def test_our_commands_are_recognised_by_their_program_name(argv, expected):
    assert console.running_command(argv) is expected


def test_hidden_native_output_is_shown_when_the_block_fails(capfd):
    with console.native_output_hidden():
        os.write(2, b"C++ chatter\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError), console.native_output_hidden():
        os.write(2, b"why it failed\n")
        raise RuntimeError("failed")
    assert capfd.readouterr().err == "why it failed\n"
    os.write(2, b"after\n")  # stderr is itself again
    assert capfd.readouterr().err == "after\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, flag",
    [
        (["-m", "export"], "--model_dir:"),
        (["-m", "keras_preact.export.client"], "--saved_model:"),
    ],
)
def test_help_lists_the_commands_flags_and_exits_0(command, flag):
    proc = _command(*command, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert flag in proc.stdout and "--[no]verbose:" in proc.stdout
    assert "--helpfull" not in proc.stderr
    assert not any(noise in proc.stdout + proc.stderr for noise in NOISE)


@pytest.mark.slow
def test_dash_v_brings_tensorflow_logs_back():
    quiet, verbose = (
        _command("recipes/cifar.py", "--help"),
        _command("recipes/cifar.py", "-v", "-h"),
    )
    assert quiet.returncode == verbose.returncode == 0
    assert not any(noise in quiet.stderr for noise in NOISE), quiet.stderr[-2000:]
    if not tf.config.list_physical_devices("GPU"):  # what TensorFlow says at start on a CPU
        assert any(noise in verbose.stderr for noise in NOISE), verbose.stderr[-2000:]
