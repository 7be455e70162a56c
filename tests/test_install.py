"""The installed package does the README's jobs without a checkout: train, export, query.

The wheel is built from a copy of the package's sources (nothing is written
into the checkout), installed (not editable) into a fresh virtual
environment, and its console scripts run from a folder outside the checkout.
The fresh environment reuses this one's already-installed dependencies
through a path file (re-downloading TensorFlow is not what is tested), but not
its editable keras_preact: path files inside an added folder are not read.
"""

import glob
import os
import shutil
import site
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(command, cwd, timeout=600, check=True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CONFIG")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`(bin folder, python, work folder)` of a fresh venv with the keras-preact wheel."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source)
    shutil.copytree(
        os.path.join(REPO, "keras_preact"),
        source / "keras_preact",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(root / "dist"), str(source)],
        cwd=root,
    )
    (wheel,) = glob.glob(str(root / "dist" / "keras_preact-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    python = str(venv / "bin" / "python")
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root
    ).stdout.strip()
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    with open(os.path.join(purelib, "_keras_preact_test_deps.pth"), "w") as f:
        f.write("".join(f"{p}\n" for p in dict.fromkeys(deps)))
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], root
    )
    work = root / "work"
    work.mkdir()
    return venv / "bin", python, work


@pytest.mark.slow
def test_installed_commands_train_export_and_query_without_a_checkout(installed):
    bin_dir, python, work = installed
    where = _run([python, "-c", "import keras_preact; print(keras_preact.__file__)"], work)
    assert where.stdout.strip().startswith(str(bin_dir.parent)), where.stdout
    assert not where.stdout.strip().startswith(REPO)

    _run(
        [str(bin_dir / "keras-preact-cifar"), "--dataset=digits", "--model_dir=run"]
        + ["--depth=8", "--width=4", "--batch_size=64", "--train_steps=20", "--seed=0"]
        + ["--verbose=0"],
        work,
    )
    # The run directory is the whole input: no sizes, labels or builder restated.
    exported = _run(
        [str(bin_dir / "keras-preact-export"), "--model_dir=run", "--output_dir=exported"]
        + ["--model_name=digits", "--tflite=float32"],
        work,
    )
    assert "labels from the run's spec.json" in exported.stdout
    assert "crop 32 from shorter side 32" in exported.stdout
    assert os.path.isfile(work / "exported" / "tflite" / "digits" / "1" / "float32.tflite")

    # Query the SavedModel with the installed client; compare with model.keras on the same PNGs.
    import keras

    import keras_preact  # noqa: F401  (registers the layers model.keras needs)
    from keras_preact.data import digits_arrays

    images, _ = digits_arrays("test")
    files = []
    for i in range(3):
        path = str(work / f"digit{i}.png")
        keras.utils.save_img(path, np.round(images[i]).astype(np.uint8), scale=False)
        files.append(path)
    proc = _run(
        [str(bin_dir / "keras-preact-client"), "--saved_model=exported/digits", "--top_k=1"]
        + files,
        work,
    )
    pixels = np.stack([keras.utils.img_to_array(keras.utils.load_img(f)) for f in files])
    model = keras.models.load_model(work / "run" / "model.keras")
    expected = model.predict(pixels, verbose=0)
    lines = proc.stdout.splitlines()
    assert len(lines) == 6, proc.stdout
    for i in range(3):
        score, label, index = lines[2 * i + 1].split()
        best = int(expected[i].argmax())
        assert (label, index) == (str(best), f"({best})")
        assert float(score) == pytest.approx(expected[i, best], abs=1e-4)
