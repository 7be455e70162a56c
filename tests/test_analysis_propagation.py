"""The propagation analysis measures what the paper's Eqns. 4-8 predict, on real images."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras_preact
from keras_preact.analysis import propagation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits_batch():
    return propagation._batch("digits", None, 8)


def _measured(depth, unit, digits_batch, zero, **kwargs):
    """The analysis of a CIFAR net of width 8 (the ratios are exact at any width; deep nets'
    build time, not their width, is what costs here)."""
    images, labels = digits_batch
    model = keras_preact.CIFARResNetV2(
        depth,
        unit,
        width=8,
        classes=10,
        classifier_activation=None,
        zero_init_last=zero,
        **kwargs,
    )
    return propagation.predict(model, propagation.measure(model, images, labels), **kwargs)


# One net of each unit family with 9 units a stage (27 units): ResNet-56 and the bottleneck
# ResNet-83. The paper's ResNet-110 and -164 have 18 a stage; the prediction is the same.
@pytest.mark.slow
@pytest.mark.parametrize("depth, unit", [(56, "basic"), (83, "bottleneck")])
def test_with_f_zero_gradient_ratios_are_1_and_powers_of_lambda(digits_batch, depth, unit):
    units = 27
    identity = _measured(depth, unit, digits_batch, zero=True)
    scaled = _measured(
        depth, unit, digits_batch, True, **propagation.SHORTCUT_CASES["constant_scaling"]
    )
    assert len(identity) == units + 1  # every unit's input, and the last unit's output
    predicted = [row for row in identity if row["predicted"] is not None]
    # Everything but the inputs of the units with a projection shortcut (2 or 3 of them).
    assert len(predicted) >= units - 2
    for row in predicted:
        assert row["predicted"] == 1.0
        assert row["stage_ratio"] == pytest.approx(1.0, rel=1e-6), row
    powers = set()
    for row in scaled:
        if row["predicted"] is None:
            continue
        assert row["predicted"] == 0.5 ** round(-np.log2(row["predicted"]))
        powers.add(round(-np.log2(row["predicted"])))
        assert row["stage_ratio"] == pytest.approx(row["predicted"], rel=1e-5), row
    assert max(powers) >= 8  # units 1..9 of a stage of 9: down to 0.5^9
    # The predicted rows are the same units in both (a scale is no projection).
    assert [r["predicted"] is None for r in scaled] == [r["predicted"] is None for r in identity]


@pytest.mark.slow
def test_default_initialisation_and_post_addition_relu_break_the_identity(digits_batch):
    """The measurement is not the prediction restated: where F != 0 the ratios move."""
    default = _measured(20, "basic", digits_batch, zero=False)
    assert max(abs(r["stage_ratio"] - 1) for r in default) > 0.05
    original = _measured(20, "basic", digits_batch, zero=True, unit_variant="original")
    assert len(original) == 10 and all(r["predicted"] is None for r in original[:-1])


@pytest.mark.slow
def test_command_writes_the_csv_and_the_plot(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    command = [sys.executable, "-m", "keras_preact.analysis", "propagation", "--nets=ResNet20V2"]
    command += ["--cases=identity,constant_scaling", f"--output_dir={tmp_path}", "--batch_size=4"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the 16 exact predictions hold to 0.0e+00" in proc.stderr
    with open(tmp_path / "propagation.csv") as f:
        written = list(csv.DictReader(f))
    assert len(written) == 2 * 2 * 10  # cases x inits x (9 units + output)
    assert {(r["case"], r["init"]) for r in written} == {
        (case, init) for case in ("identity", "constant_scaling") for init in ("default", "zero")
    }
    zero_scaled = [r for r in written if (r["case"], r["init"]) == ("constant_scaling", "zero")]
    assert float(zero_scaled[0]["stage_ratio"]) == pytest.approx(0.5**3, rel=1e-5)
    with Image.open(tmp_path / "propagation.png") as image:
        assert image.format == "PNG" and image.size[0] > 500
