"""Shared pieces of the export tests: subprocess runs, the tiny model, references.

The fixtures built from them (`photos`, `trained`, `exported`: one tiny
classifier exported once per session) live in `conftest.py`.
"""

import hashlib
import os
import subprocess
from pathlib import Path

import keras
import numpy as np

import keras_preact
from keras_preact.preprocessing import imagenet_classes

REPO = Path(__file__).resolve().parents[1]
NAMES = np.array([name for _, name in imagenet_classes()], dtype=object)


def subprocess_env():
    """os.environ with the checkout importable and TensorFlow quiet."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_command(command, timeout=240, check=True):
    """Runs `command` from the checkout; AssertionError with its stderr when it fails."""
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=subprocess_env(), cwd=REPO
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{command[:4]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def tree_digest(root):
    """{relative path: sha256} of every file under root."""
    digest = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digest[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digest


def tiny_model(classes=1000, seed=0):
    """CIFAR-style ResNet-8, width 8, any H/W: small enough to export in seconds."""
    keras.utils.set_random_seed(seed)
    return keras_preact.CIFARResNetV2(
        depth=8, width=8, classes=classes, input_shape=(None, None, 3), normalization="torch"
    )


def keras_reference(trained):
    """The reloaded Keras model's probabilities on the photos' eval crops."""
    _, model, crops = trained
    return np.asarray(model(crops, training=False))
