"""The model zoo without TensorFlow: Keras on JAX, in a process that cannot import TensorFlow.

This process (with TensorFlow) writes a checkpoint of each foreign format and
the outputs of independent references for them (the timm and fb.resnet.torch
graphs of `foreign_nets`, keras.applications' ResNet50V2); a fresh process
with `KERAS_BACKEND=jax` and every `tensorflow` import blocked
(`zoo_without_tensorflow.py`) builds the nets, loads every format, saves and
reloads, loads the files of keras-preact 0.1.0, trains a step, runs
`preprocess_input` / `decode_predictions`, finds that data, training and
export say in one line that they need TensorFlow, and runs
benchmarks/gpu_keras_backends.py --smoke.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import torch7_writer
from foreign_nets import fb_module_tree, timm_forward, timm_state_dict, torch7_forward
from safetensors.numpy import save_file

from keras_preact import preprocessing

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("jax") is None, reason="needs jax (the test extra)"
)


def _keras_applications_h5(path, images, randomize_batchnorm):
    from keras.src.legacy.saving import legacy_h5_format

    reference = keras.applications.ResNet50V2(
        weights=None, input_shape=images.shape[1:], classifier_activation=None
    )
    randomize_batchnorm(reference, seed=5)
    with h5py.File(path, "w") as h5:
        legacy_h5_format.save_weights_to_hdf5_group(h5, reference)
    inputs = keras.applications.resnet_v2.preprocess_input(images.copy())
    return reference.predict(inputs, verbose=0)


def _cases(folder, randomize_batchnorm):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    images224 = rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32")  # fb's 7x7 average pool
    state = timm_state_dict(18, np.random.default_rng(1))
    save_file(
        {k: np.ascontiguousarray(v) for k, v in state.items()}, str(folder / "r18.safetensors")
    )
    tree = fb_module_tree(18, np.random.default_rng(2), torch7_writer)
    torch7_writer.save(folder / "resnet-18.t7", tree)
    import torchfile

    mean, std = preprocessing.normalization_stats("torch")
    expected = {
        "images": images,
        "images224": images224,
        "timm": timm_forward(state, images / 127.5 - 1.0),
        "torch7": torch7_forward(
            torchfile.load(str(folder / "resnet-18.t7")), (images224 - mean) / std
        ),
        "keras_h5": _keras_applications_h5(folder / "r50.h5", images, randomize_batchnorm),
    }
    np.savez(folder / "expected.npz", **expected)
    cases = {
        "timm": str(folder / "r18.safetensors"),
        "torch7": str(folder / "resnet-18.t7"),
        "keras_h5": str(folder / "r50.h5"),
        "v0_1_files": os.path.join(HERE, "data", "v0_1_files"),
    }
    (folder / "cases.json").write_text(json.dumps(cases))


@pytest.mark.slow
def test_model_zoo_runs_on_jax_without_tensorflow(tmp_path, randomize_batchnorm):
    _cases(tmp_path, randomize_batchnorm)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "zoo_without_tensorflow.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "skipped" not in proc.stdout, proc.stdout
    assert proc.stdout.count("ok: ") == 9, proc.stdout
    assert "all checks passed on jax without TensorFlow" in proc.stdout
