"""The table runner (`keras_preact.analysis.table`): printed, run, killed, resumed and collected.

Real processes: the runner and the CIFAR recipe it starts, on the bundled
digits with a tiny net (about 10 s a run on 2 CPU cores). Two rows of one seed
each: the runner, killed once the first run finished, is run again, so three
recipe processes start (the second twice, killed at its start the first time);
the median and spread over several seeds are checked in-process
(`test_median_and_spread_over_*_seeds`).
"""

import csv
import dataclasses
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time

import pytest
from absl import flags

from keras_preact.analysis import table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ("identity", "conv1x1")
SEEDS = (1,)
# Written out here, not read from table.TABLES, so a wrong row there fails: Table 1 is on
# ResNet-110 with original units (SPEC.md §1).
ROW_FLAGS = {
    "identity": ["--dataset=cifar10", "--depth=110", "--unit_variant=original"],
    "conv1x1": [
        "--dataset=cifar10",
        "--depth=110",
        "--unit_variant=original",
        "--shortcut=conv1x1",
    ],
}
PAPER = {"identity": "6.61", "conv1x1": "12.22"}
TINY = [
    "--dataset=digits",
    "--depth=8",
    "--width=4",
    "--train_steps=20",
    "--batch_size=64",
    "--eval_every=0",
    "--steps_per_epoch=5",
    "--verbose=0",
]
RUNS = len(ROWS) * len(SEEDS)
SKIPPED = re.compile(rf"^\[\d+/{RUNS}\] (\S+) seed (\d+): finished \(metrics\.json\), skipped\.$")
STARTED = re.compile(rf"^\[\d+/{RUNS}\] (\S+) seed (\d+) (starts|resumes from its checkpoint): ")


def _env():
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def _runner(root, *args):
    return [
        sys.executable,
        "-m",
        "keras_preact.analysis",
        "table",
        "--table=1",
        f"--rows={','.join(ROWS)}",
        f"--seeds={','.join(map(str, SEEDS))}",
        f"--root={root}",
        *args,
        "--",
        *TINY,
    ]


def _model_dir(root, row, seed):
    return os.path.join(root, row, f"seed{seed}")


def _metrics_files(root):
    paths = [
        os.path.join(_model_dir(root, row, seed), "metrics.json") for seed in SEEDS for row in ROWS
    ]
    return [path for path in paths if os.path.exists(path)]


def test_dry_run_prints_each_row_and_seed_and_runs_nothing(tmp_path):
    root = str(tmp_path / "runs")
    proc = subprocess.run(
        _runner(root, "--dry_run"), env=_env(), cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    expected = [
        [
            sys.executable,
            *table.RECIPE,
            *ROW_FLAGS[row],
            f"--seed={seed}",
            f"--model_dir={_model_dir(root, row, seed)}",
            *TINY,  # after the row's flags: absl keeps the last value of a flag
        ]
        for seed in SEEDS
        for row in ROWS
    ]
    assert [shlex.split(line) for line in lines] == expected
    assert not os.path.exists(root)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """The runner killed (with its recipe) once the first run finished, then run again."""
    root = str(tmp_path_factory.mktemp("table") / "runs")
    first = _model_dir(root, ROWS[0], SEEDS[0])
    with open(os.path.join(os.path.dirname(root), "first.log"), "w") as log:
        runner = subprocess.Popen(
            _runner(root),
            env=_env(),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the runner and its recipe
        )
        deadline = time.monotonic() + 180
        while not os.path.exists(os.path.join(first, "metrics.json")):
            assert runner.poll() is None, open(log.name).read()
            assert time.monotonic() < deadline, "the first run did not finish in 180 s"
            time.sleep(0.05)
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
    finished = {}
    for path in _metrics_files(root):
        with open(path, "rb") as f:
            finished[path] = (os.stat(path).st_mtime_ns, f.read())
    killed_with_table = os.path.exists(os.path.join(root, "table.md"))
    again = subprocess.run(
        _runner(root), env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    return root, finished, killed_with_table, again


def test_a_killed_table_run_resumes_without_redoing_finished_runs(killed_and_resumed):
    root, finished, killed_with_table, again = killed_and_resumed
    assert again.returncode == 0, again.stdout + again.stderr
    assert 1 <= len(finished) < len(ROWS) * len(SEEDS)
    assert not killed_with_table  # killed before collecting
    lines = again.stdout.splitlines()
    skipped = [m.groups() for m in map(SKIPPED.match, lines) if m]
    started = [m.groups()[:2] for m in map(STARTED.match, lines) if m]
    finished_runs = {
        (
            os.path.basename(os.path.dirname(os.path.dirname(p))),
            os.path.basename(os.path.dirname(p))[4:],
        )
        for p in finished
    }
    assert set(skipped) == finished_runs and len(skipped) == len(finished)
    assert len(started) == len(ROWS) * len(SEEDS) - len(finished)
    assert not set(started) & finished_runs
    for path, (mtime, content) in finished.items():
        with open(path, "rb") as f:
            assert (os.stat(path).st_mtime_ns, f.read()) == (mtime, content), path
    assert len(_metrics_files(root)) == len(ROWS) * len(SEEDS)
    # The row's flags and the pass-through ones reached each run; the later --depth won.
    for seed in SEEDS:
        for row in ROWS:
            with open(os.path.join(_model_dir(root, row, seed), "config.json")) as f:
                config = json.load(f)
            shortcut = "conv1x1" if row == "conv1x1" else "identity"
            assert (config["dataset"], config["depth"], config["width"]) == ("digits", 8, 4)
            assert (config["unit_variant"], config["shortcut"]) == ("original", shortcut)
            assert (config["seed"], config["train_steps"]) == (seed, 20)


def test_the_collected_table_has_each_rows_median_spread_and_count(killed_and_resumed):
    root = killed_and_resumed[0]
    errors = {}
    for row in ROWS:
        for seed in SEEDS:
            with open(os.path.join(_model_dir(root, row, seed), "metrics.json")) as f:
                errors.setdefault(row, []).append(100 * (1 - json.load(f)["test_accuracy"]))
    with open(os.path.join(root, "table.csv"), newline="") as f:
        lines = list(csv.DictReader(f))
    assert [line["row"] for line in lines] == list(ROWS)
    for line in lines:
        values = errors[line["row"]]
        assert int(line["seeds_finished"]) == int(line["seeds"]) == len(SEEDS)
        assert float(line["median_error"]) == pytest.approx(statistics.median(values), abs=1e-4)
        assert float(line["min_error"]) == pytest.approx(min(values), abs=1e-4)
        assert float(line["max_error"]) == pytest.approx(max(values), abs=1e-4)
        assert line["paper_error"] == PAPER[line["row"]]
        assert line["flags"] == " ".join(ROW_FLAGS[line["row"]])
        assert line["trained_as"] == "digits, depth 8, 20 steps"
    with open(os.path.join(root, "table.md")) as f:
        markdown = f.read()
    for row in ROWS:
        median = statistics.median(errors[row])
        (line,) = [line for line in markdown.splitlines() if line.startswith(f"| {row} |")]
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[2] == f"{len(SEEDS)} of {len(SEEDS)}"
        assert cells[3].split()[0] == f"{median:.2f}"
        assert cells[5] == PAPER[row]


def test_the_curves_plot_draws_every_row(killed_and_resumed):
    import matplotlib
    import numpy as np
    from matplotlib import image

    pixels = image.imread(os.path.join(killed_and_resumed[0], "curves.png"))[..., :3]
    assert pixels.shape[0] > 400 and pixels.shape[1] > 600
    # One colour per row (tab10, in the table's order): each is drawn, a third is not.
    palette = matplotlib.colormaps["tab10"]
    counts = [
        int((np.abs(pixels - np.array(palette(i)[:3])).max(axis=-1) < 0.02).sum()) for i in range(3)
    ]
    assert counts[0] > 100 and counts[1] > 100 and counts[2] == 0, counts


def test_every_row_of_every_table_is_a_valid_recipe_command():
    """Each row's flags parse into a valid config (the paper's depth) and build as a tiny net."""
    import keras_preact
    from keras_preact.data import dataset_info
    from keras_preact.training.flags import config_from_flags, define_flags
    from keras_preact.training.run import builder_call

    assert [len(rows) for rows in table.TABLES.values()] == [11, 10, 3, 4]
    built = set()
    for name, rows in table.TABLES.items():
        assert len({row.name for row in rows}) == len(rows), name
        for row in rows:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+", row.name), row.name
            assert row.paper == table.FAIL or 3 < row.paper < 30, row
            values = flags.FlagValues()
            define_flags("cifar", values)
            values(["cifar.py", *row.flags, "--model_dir=unused"])
            config = config_from_flags("cifar", values)
            config.validate()
            assert config.depth in (110, 164, 1001)
            assert config.dataset == ("cifar100" if name == "cifar100" else "cifar10")
            if name == "1":
                assert (config.depth, config.unit_variant) == (110, "original")
            small = dataclasses.replace(
                config,
                depth=8 if config.depth == 110 else 11,
                unit="basic" if config.depth == 110 else "bottleneck",
                width=4,
                batch_size=8,
            )
            _, kwargs = builder_call(small, dataset_info("digits"))
            key = json.dumps(kwargs, sort_keys=True, default=str)
            if key not in built:
                built.add(key)
                keras_preact.CIFARResNetV2(**kwargs)


def test_a_failed_run_is_reported_and_the_runner_exits_non_zero(tmp_path):
    root = str(tmp_path / "runs")
    command = [
        sys.executable,
        "-m",
        "keras_preact.analysis",
        "table",
        "--table=2",
        "--rows=full_preact_164",
        "--seeds=3",
        f"--root={root}",
        "--",
        "--dataset=digits",
        "--depth=9",  # no CIFAR depth: the recipe exits 1 before training
    ]
    proc = subprocess.run(command, env=_env(), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[1/1] full_preact_164 seed 3 FAILED (exit status 1)" in proc.stdout
    assert "1 of 1 runs failed:" in proc.stderr
    report = proc.stderr.split("1 of 1 runs failed:")[1]
    assert "--unit_variant=full_preact --seed=3" in report and "--depth=9" in report
    assert "Error: Invalid --depth 9" in report  # the run's last stderr lines
    with open(os.path.join(root, "table.csv"), newline="") as f:
        (line,) = csv.DictReader(f)
    assert (line["row"], line["seeds_finished"], line["median_error"]) == (
        "full_preact_164",
        "0",
        "",
    )


def test_median_and_spread_over_an_odd_number_of_seeds():
    row = table.TABLES["2"][0]
    history = [{"step": 10, "loss": 2.0, "error": 90.0}, {"step": 20, "loss": 1.0, "error": None}]
    other = [{"step": 10, "loss": 4.0, "error": 70.0}, {"step": 20, "loss": 3.0, "error": 60.0}]
    result = table.Result(row, {1: 10.0, 2: 50.0, 4: 20.0}, [1, 2, 3, 4, 5], {1: history}, "x")
    assert (result.median, result.spread) == (20.0, (10.0, 50.0))
    (line,) = [
        line for line in table.format_markdown("2", [result], "r").splitlines() if "| x |" in line
    ]
    assert "| 3 of 5 | 20.00 | 10.00-50.00 | 6.61 |" in line
    assert table.median_curve([history, other], "loss") == ([10, 20], [3.0, 2.0])
    assert table.median_curve([history, other], "error") == ([10, 20], [80.0, 60.0])


def test_median_and_spread_over_an_even_number_of_seeds():
    """Two seeds of a row: the median is their mean (the killed-and-resumed runs have one seed)."""
    row = table.TABLES["1"][0]
    assert (row.name, row.paper) == ("identity", float(PAPER["identity"]))
    result = table.Result(row, {1: 7.5, 2: 5.0}, [1, 2], {}, "x")
    assert (result.median, result.spread) == (6.25, (5.0, 7.5))
    (line,) = [
        line for line in table.format_markdown("1", [result], "r").splitlines() if "| x |" in line
    ]
    assert "| 2 of 2 | 6.25 | 5.00-7.50 | 6.61 |" in line
