"""`python -m keras_preact.analysis table`: the paper's CIFAR tables, a training run per row x seed.

Trains every row of one of the paper's tables (`TABLES`: Table 1's shortcuts,
Table 2's unit variants, the ResNet-1001 and the CIFAR-100 results) with the
CIFAR recipe, for each seed, into `<root>/<row>/seed<k>/`, then collects the
runs into `<root>/table.md`, `<root>/table.csv` and `<root>/curves.png`:
per row the median test error over the finished seeds, its min-max spread,
the number of finished seeds and the paper's figure beside it, and the
training curves of all rows in the style of the paper's Fig. 1 and 6
(training loss dashed, left axis; test error bold, right axis; the median
over the seeds at each iteration).

The paper's tables (a GPU's work: ResNet-110 is about 1.7 M parameters and
64k iterations at batch 128 per run; the paper reports the median of 5 runs):

    python -m keras_preact.analysis table --table=1 --seeds=1,2,3,4,5 --root=runs/table1
    python -m keras_preact.analysis table --table=2 --seeds=1,2,3,4,5 --root=runs/table2
    python -m keras_preact.analysis table --table=cifar1001 --root=runs/cifar1001
    python -m keras_preact.analysis table --table=cifar100 --root=runs/cifar100 \\
        -- --download                     # training flags after "--" go to every run
    python -m keras_preact.analysis table --table=2 --rows=original_110,full_preact_110 \\
        --dry_run                         # print the commands (e.g. for a cluster), run nothing
    python -m keras_preact.analysis table --table=2 --root=runs/table2 --collect

`python -m keras_preact.analysis.table ...` is the same command. A CPU-sized version (the
bundled digits, ResNet-20, 2 seeds, a subset of Table 1's rows):

    python -m keras_preact.analysis table --table=1 --seeds=1,2 --root=runs/digits_t1 \\
        --rows=identity,scaling_0.5_f0.5,gating_b-6,conv1x1,dropout_0.5 \\
        -- --dataset=digits --depth=20 --train_steps=2000

Everything after `--` is appended to every run's recipe flags, after the
row's own, so it overrides them (absl keeps the last value of a flag):
`-- --depth=20` trains each row at depth 20. `--seed` and `--model_dir` are
the runner's.

Runs go one at a time, seed by seed (every row's seed 1, then every row's
seed 2, ...), so a first full table exists early. Each is one process of the
CIFAR recipe (`keras-preact-cifar`, `recipes/cifar.py`); `--dry_run` prints
exactly the commands it would run. A run whose folder has `metrics.json` is
finished and skipped; a run with a checkpoint but no metrics resumes from it
(the recipe does that). A failed run is reported (its command and the last
lines of its stderr) and the others go on; the runner then exits with status
1. Ctrl-C or SIGTERM reaches the running recipe too, which stops at a
checkpoint; the runner starts nothing more and exits 130 / 143. Running the
same command again resumes the table where it stopped. `--collect` only
collects (it is also done after the runs).

`curves.png` needs matplotlib (`pip install 'keras-preact[analysis]'`);
without it the tables are written and the plot is skipped.

Example (the command of one row and seed):

>>> run = plan("cifar1001", ["full_preact_1001_batch64"], [3], "runs/r1001", ["--download"])[0]
>>> run.flags  # doctest: +NORMALIZE_WHITESPACE
('--dataset=cifar10', '--depth=1001', '--unit_variant=full_preact', '--batch_size=64',
 '--seed=3', '--model_dir=runs/r1001/full_preact_1001_batch64/seed3', '--download')
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading

from absl import app, flags

from keras_preact import run_dir

FLAGS = flags.FLAGS
HELP = "trains a table of the paper (a run per row x seed), collects it beside the paper's numbers"

FAIL = "fail"  # the paper's "fail": test error > 20% (SPEC.md §1)
FAIL_ABOVE = 20.0


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a paper's table: a folder-safe `name`, its recipe `flags`, the paper's error.

    `paper` is the paper's CIFAR test error in % (the median of 5 runs) or
    `FAIL` (> 20%); `setting` says the row in the paper's words.
    """

    name: str
    flags: tuple[str, ...]
    paper: float | str
    setting: str


def _rows(base, rows):
    """`Row`s from `(name, flags, paper, setting)`, flags a string after the common `base`."""
    return [
        Row(name, tuple(f"{base} {extra}".split()), paper, setting)
        for name, extra, paper, setting in rows
    ]


# The rows of the paper's CIFAR tables, with its test errors in % (He et al. 2016, "Identity
# Mappings in Deep Residual Networks"; SPEC.md §1, and the paper's text and tables in
# ../shared/reference/). The flags are those of the README's "one command per row" table.
# fmt: off
TABLES = {
    # Table 1: shortcut types on ResNet-110 with the original (post-activation) units, CIFAR-10.
    "1": _rows("--dataset=cifar10 --depth=110 --unit_variant=original", [
        ("identity", "", 6.61, "identity shortcut (original ResNet-110), Fig. 2(a)"),
        ("scaling_0", "--shortcut=constant_scaling --shortcut_scale=0 --residual_scale=1",
         FAIL, "constant scaling: 0 on the shortcut, 1 on F (a plain net), Fig. 2(b)"),
        ("scaling_0.5", "--shortcut=constant_scaling --shortcut_scale=0.5 --residual_scale=1",
         FAIL, "constant scaling: 0.5 on the shortcut, 1 on F, Fig. 2(b)"),
        ("scaling_0.5_f0.5",
         "--shortcut=constant_scaling --shortcut_scale=0.5 --residual_scale=0.5",
         12.35, "constant scaling: 0.5 on both (frozen gating), Fig. 2(b)"),
        # The paper: "fail" for every b_g from 0 to -5; b_g = 0 stands for them here.
        ("gating_b0", "--shortcut=exclusive_gating --gate_bias_init=0",
         FAIL, "exclusive gating, b_g = 0 (paper: fail for 0 to -5), Fig. 2(c)"),
        ("gating_b-6", "--shortcut=exclusive_gating --gate_bias_init=-6",
         8.70, "exclusive gating, b_g = -6, Fig. 2(c)"),
        ("gating_b-7", "--shortcut=exclusive_gating --gate_bias_init=-7",
         9.81, "exclusive gating, b_g = -7, Fig. 2(c)"),
        ("shortcut_gating_b0", "--shortcut=shortcut_only_gating --gate_bias_init=0",
         12.86, "shortcut-only gating, b_g = 0, Fig. 2(d)"),
        ("shortcut_gating_b-6", "--shortcut=shortcut_only_gating --gate_bias_init=-6",
         6.91, "shortcut-only gating, b_g = -6, Fig. 2(d)"),
        ("conv1x1", "--shortcut=conv1x1", 12.22, "1x1 conv shortcut, Fig. 2(e)"),
        ("dropout_0.5", "--shortcut=dropout --shortcut_dropout_rate=0.5",
         FAIL, "dropout 0.5 on the shortcut, Fig. 2(f)"),
    ]),
    # Table 2: where BN and ReLU sit (Fig. 4), ResNet-110 and ResNet-164, CIFAR-10.
    "2": _rows("--dataset=cifar10 --depth=110", [
        ("original_110", "--unit_variant=original", 6.61, "original unit, Fig. 4(a), ResNet-110"),
        ("bn_after_addition_110", "--unit_variant=bn_after_addition", 8.17,
         "BN after addition, Fig. 4(b), ResNet-110"),
        ("relu_before_addition_110", "--unit_variant=relu_before_addition", 7.84,
         "ReLU before addition, Fig. 4(c), ResNet-110"),
        ("relu_only_preact_110", "--unit_variant=relu_only_preact", 6.71,
         "ReLU-only pre-activation, Fig. 4(d), ResNet-110"),
        ("full_preact_110", "--unit_variant=full_preact", 6.37,
         "full pre-activation, Fig. 4(e), ResNet-110"),
    ]) + _rows("--dataset=cifar10 --depth=164", [
        ("original_164", "--unit_variant=original", 5.93, "original unit, Fig. 4(a), ResNet-164"),
        ("bn_after_addition_164", "--unit_variant=bn_after_addition", 6.50,
         "BN after addition, Fig. 4(b), ResNet-164"),
        ("relu_before_addition_164", "--unit_variant=relu_before_addition", 6.14,
         "ReLU before addition, Fig. 4(c), ResNet-164"),
        ("relu_only_preact_164", "--unit_variant=relu_only_preact", 5.91,
         "ReLU-only pre-activation, Fig. 4(d), ResNet-164"),
        ("full_preact_164", "--unit_variant=full_preact", 5.46,
         "full pre-activation, Fig. 4(e), ResNet-164"),
    ]),
    # Table 3 and Fig. 1: ResNet-1001 on CIFAR-10, original vs pre-activation units; 4.62% at
    # batch 64 (the recipe scales the learning rate and the steps with the batch size).
    "cifar1001": _rows("--dataset=cifar10 --depth=1001", [
        ("original_1001", "--unit_variant=original", 7.61, "ResNet-1001, original unit"),
        ("full_preact_1001", "--unit_variant=full_preact", 4.92,
         "ResNet-1001, full pre-activation"),
        ("full_preact_1001_batch64", "--unit_variant=full_preact --batch_size=64", 4.62,
         "ResNet-1001, full pre-activation, batch 64"),
    ]),
    # Tables 3-4: CIFAR-100, ResNet-164 and ResNet-1001, original vs pre-activation units.
    "cifar100": _rows("--dataset=cifar100", [
        ("original_164", "--depth=164 --unit_variant=original", 25.16,
         "ResNet-164, original unit"),
        ("full_preact_164", "--depth=164 --unit_variant=full_preact", 24.33,
         "ResNet-164, full pre-activation"),
        ("original_1001", "--depth=1001 --unit_variant=original", 27.82,
         "ResNet-1001, original unit"),
        ("full_preact_1001", "--depth=1001 --unit_variant=full_preact", 22.71,
         "ResNet-1001, full pre-activation"),
    ]),
}
# fmt: on
TITLES = {
    "1": "Table 1: shortcut connections (ResNet-110, original units, CIFAR-10)",
    "2": "Table 2: activation functions (ResNet-110 / 164, CIFAR-10)",
    "cifar1001": "ResNet-1001 on CIFAR-10 (Table 3, Fig. 1)",
    "cifar100": "CIFAR-100: ResNet-164 and ResNet-1001 (Tables 3-4)",
}

# The child process: the CIFAR recipe, named as its installed command so that it is recognised
# as one of ours (`keras_preact.console.running_command`: TensorFlow starts quietly). Works
# installed and from a checkout (wherever this interpreter imports keras_preact).
RECIPE = [
    "-c",
    'import sys; sys.argv[0] = "keras-preact-cifar"; '
    "from keras_preact.training import cli; cli.cifar()",
]
RUNNER_FLAGS = ("seed", "model_dir")  # set per run by the runner, not to be passed through
STDERR_LINES = 15  # of a failed run, reported


# ---------------------------------------------------------------- the runs


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: a row and a seed, its folder and its recipe flags."""

    row: Row
    seed: int
    model_dir: str
    flags: tuple[str, ...]

    @property
    def command(self):
        """The process the runner starts (argv)."""
        return [sys.executable, *RECIPE, *self.flags]

    def finished(self):
        return os.path.exists(os.path.join(self.model_dir, "metrics.json"))

    def has_checkpoint(self):
        return os.path.exists(os.path.join(self.model_dir, "checkpoints", "checkpoint"))


def table_rows(table, names=None):
    """The `Row`s of `table`, or those named in `names` (in the table's order); ValueError else."""
    if table not in TABLES:
        raise ValueError(f"Unknown table {table!r}. Allowed: {', '.join(TABLES)}.")
    rows = TABLES[table]
    if names:
        known = [row.name for row in rows]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"Table {table} has no row {', '.join(map(repr, unknown))}. "
                f"Its rows: {', '.join(known)}."
            )
        rows = [row for row in rows if row.name in names]
    return rows


def plan(table, names, seeds, root, extra=()):
    """The `Run`s of `table`'s rows (`names`, default all) x `seeds`, seed by seed."""
    rows = table_rows(table, names)
    return [
        Run(row, seed, path, (*row.flags, f"--seed={seed}", f"--model_dir={path}", *extra))
        for seed in seeds
        for row in rows
        for path in [os.path.join(root, row.name, f"seed{seed}")]
    ]


class _StopSignals:
    """While active, SIGINT and SIGTERM are recorded (`received`) and passed on to the child.

    The child (same process group) gets a terminal's Ctrl-C by itself; a signal
    sent to the runner alone reaches it as SIGTERM, which the recipe answers,
    like Ctrl-C, by stopping at a checkpoint (a second SIGTERM changes nothing,
    where a second SIGINT would abort it without one).
    """

    def __init__(self):
        self.received = None
        self.child = None

    def __enter__(self):
        self._previous = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _on_signal(self, number, frame):
        if self.received is None:
            self.received = signal.Signals(number)
            print(
                f"\n{self.received.name}: the running recipe stops at a checkpoint; "
                "no further run is started.",
                file=sys.stderr,
                flush=True,
            )
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)


def _tee(source, sink, tail):
    """Copies the child's stderr to ours as it comes, keeping its last bytes in `tail`."""
    while True:
        chunk = os.read(source.fileno(), 65536)
        if not chunk:
            return
        tail.extend(chunk)
        del tail[:-16384]
        if sink is not None:
            sink.write(chunk)
            sink.flush()
        else:
            sys.stderr.write(chunk.decode("utf-8", "replace"))


def _last_lines(data, count=STDERR_LINES):
    text = data.decode("utf-8", "replace")
    # A progress bar rewrites its line after "\r": keep what the line shows last.
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return [line for line in lines if line.strip()][-count:]


def execute(run, stop):
    """Runs `run.command`; returns (exit status, its last stderr lines)."""
    sys.stdout.flush()
    child = subprocess.Popen(run.command, stderr=subprocess.PIPE, bufsize=0)
    stop.child = child
    if stop.received:  # a signal came while the child was starting
        child.send_signal(signal.SIGTERM)
    tail = bytearray()
    sink = getattr(sys.stderr, "buffer", None)
    reader = threading.Thread(target=_tee, args=(child.stderr, sink, tail), daemon=True)
    reader.start()
    try:
        code = child.wait()
    finally:
        stop.child = None
    reader.join()
    child.stderr.close()
    return code, _last_lines(bytes(tail))


def run_all(runs):
    """Runs what is not finished, one at a time; returns (failures, the stop signal or None).

    A failure is `(run, exit status, last stderr lines)`.
    """
    failures = []
    total = len(runs)
    with _StopSignals() as stop:
        for index, run in enumerate(runs, 1):
            if stop.received:
                break
            prefix = f"[{index}/{total}] {run.row.name} seed {run.seed}"
            if run.finished():
                print(f"{prefix}: finished (metrics.json), skipped.", flush=True)
                continue
            state = "resumes from its checkpoint" if run.has_checkpoint() else "starts"
            print(f"{prefix} {state}: {shlex.join(run.command)}", flush=True)
            code, lines = execute(run, stop)
            if stop.received:
                break
            if code == 0 and not run.finished():
                lines = [*lines, "(exited 0 but wrote no metrics.json)"]
            if code != 0 or not run.finished():
                failures.append((run, code, lines))
                print(f"{prefix} FAILED (exit status {code}); going on with the others.")
                print(_indent(lines), flush=True)
    return failures, stop.received


def _indent(lines):
    return "\n".join(f"    {line}" for line in lines)


# ---------------------------------------------------------------- collecting


@dataclasses.dataclass
class Result:
    """A row's finished runs: test errors in % by seed, each run's history and settings."""

    row: Row
    errors: dict  # seed -> test error in %
    seeds: list  # the seeds asked for or found
    histories: dict  # seed -> [{"step", "loss", "error"}, ...]
    trained_as: str  # dataset, depth, steps of the finished runs

    @property
    def median(self):
        return statistics.median(self.errors.values()) if self.errors else None

    @property
    def spread(self):
        values = self.errors.values()
        return (min(values), max(values)) if self.errors else None


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def read_history(model_dir):
    """history.csv as `[{"step", "loss", "error"}]` (error: 100 x (1 - val_top1), or None)."""
    path = os.path.join(model_dir, "history.csv")
    if not os.path.exists(path):
        return []
    points = []
    with open(path, newline="") as f:
        for line in csv.DictReader(f):
            step, top1 = _number(line.get("step")), _number(line.get("val_top1"))
            if step is None:
                continue
            points.append(
                {
                    "step": int(step),
                    "loss": _number(line.get("loss")),
                    "error": None if top1 is None else 100 * (1 - top1),
                }
            )
    return points


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def collect(table, names, seeds, root):
    """The `Result` of each row: every `<root>/<row>/seed<k>/` with a metrics.json."""
    results = []
    for row in table_rows(table, names):
        folder = os.path.join(root, row.name)
        found = set()
        if os.path.isdir(folder):
            found = {
                int(m[1]) for m in map(re.compile(r"seed(\d+)$").match, os.listdir(folder)) if m
            }
        errors, histories, settings = {}, {}, []
        for seed in sorted(found):
            model_dir = os.path.join(folder, f"seed{seed}")
            metrics = _read_json(os.path.join(model_dir, "metrics.json"))
            if "test_accuracy" not in metrics:
                continue
            errors[seed] = 100 * (1 - metrics["test_accuracy"])
            histories[seed] = read_history(model_dir)
            config = _read_json(os.path.join(model_dir, "config.json"))
            settings.append(
                f"{config.get('dataset', metrics.get('dataset', '?'))}, depth "
                f"{config.get('depth', '?')}, {metrics.get('steps', '?')} steps"
            )
        trained_as = " / ".join(dict.fromkeys(settings))
        results.append(Result(row, errors, sorted(found | set(seeds)), histories, trained_as))
    return results


def _paper(value):
    return f"fail (> {FAIL_ABOVE:g}%)" if value == FAIL else f"{value:.2f}"


def _error(value):
    if value is None:
        return "-"
    return f"{value:.2f}" + (" (fail)" if value > FAIL_ABOVE else "")


def format_markdown(table, results, root):
    """`table.md`: one line per row, the paper's figure beside the runs' median."""
    lines = [
        f"# {TITLES[table]}",
        "",
        f"Test error (%) of the runs in `{root}/<row>/seed<k>/`: median over the finished "
        'seeds, min-max across them. Paper: He et al. 2016, "Identity Mappings in Deep '
        f'Residual Networks" (median of 5 runs; fail = error > {FAIL_ABOVE:g}%), SPEC.md §1. '
        "Each run: `keras-preact-cifar <flags> --seed=<k> --model_dir=<root>/<row>/seed<k>` "
        "(plus the table run's flags after `--`; *trained as* says what the runs were).",
        "",
        "| row | the paper's setting | seeds finished | error % (median) | min-max "
        "| paper | trained as | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        spread = "-" if r.spread is None else f"{r.spread[0]:.2f}-{r.spread[1]:.2f}"
        cells = [
            r.row.name,
            r.row.setting,
            f"{len(r.errors)} of {len(r.seeds)}",
            _error(r.median),
            spread,
            _paper(r.row.paper),
            r.trained_as or "-",
            f"`{' '.join(r.row.flags)}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "table",
    "row",
    "setting",
    "flags",
    "seeds_finished",
    "seeds",
    "median_error",
    "min_error",
    "max_error",
    "seed_errors",
    "paper_error",
    "trained_as",
)


def format_csv(table, results):
    """`table.csv`: errors in %, empty where no run finished; seed_errors as `seed:error;...`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        low, high = r.spread or ("", "")
        writer.writerow(
            [
                table,
                r.row.name,
                r.row.setting,
                " ".join(r.row.flags),
                len(r.errors),
                len(r.seeds),
                "" if r.median is None else f"{r.median:.4f}",
                low if low == "" else f"{low:.4f}",
                high if high == "" else f"{high:.4f}",
                ";".join(f"{seed}:{error:.4f}" for seed, error in r.errors.items()),
                r.row.paper,
                r.trained_as,
            ]
        )
    return out.getvalue()


def median_curve(histories, key):
    """`(steps, values)`: at each step, the median of `key` over the histories that have it."""
    by_step = collections.defaultdict(list)
    for history in histories:
        for point in history:
            if point[key] is not None:
                by_step[point["step"]].append(point[key])
    steps = sorted(by_step)
    return steps, [statistics.median(by_step[step]) for step in steps]


def plot_curves(table, results):
    """`curves.png` as bytes (the paper's Fig. 1/6 style), or None without matplotlib."""
    try:  # matplotlib is optional (the analysis extra): imported only to plot
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    rows = len(results) + 2  # the legend: a line per row, and the two line styles
    legend_height = 0.22 * math.ceil(rows / 2) + 0.3  # inches, two columns
    figure = Figure(figsize=(10, 5.6 + legend_height), dpi=110)
    FigureCanvasAgg(figure)
    loss_axes = figure.add_subplot(1, 1, 1)
    error_axes = loss_axes.twinx()
    palette = matplotlib.colormaps["tab10" if len(results) <= 10 else "tab20"]
    handles, tops = _plot_median_curves(loss_axes, error_axes, results, palette)
    _label_axes(loss_axes, error_axes, *tops)
    _add_legend_and_title(figure, table, results, handles, legend_height)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _plot_median_curves(loss_axes, error_axes, results, palette):
    """Each row's median training loss (dashed) and test error (bold) over the seeds.

    Returns the rows' legend handles and `(top loss, top error, last step)`.
    """
    from matplotlib.lines import Line2D  # optional, as in plot_curves

    handles, top_loss, top_error, last_step = [], 0.0, 0.0, 0
    for index, r in enumerate(results):
        colour = palette(index % palette.N)
        histories = list(r.histories.values())
        steps, losses = median_curve(histories, "loss")
        loss_axes.plot(steps, losses, color=colour, linewidth=1.0, linestyle="--")
        steps_e, errors = median_curve(histories, "error")
        marker = "o" if len(steps_e) <= 15 else None
        error_axes.plot(steps_e, errors, color=colour, linewidth=2.4, marker=marker, markersize=4)
        top_loss = max([top_loss, *losses])
        top_error = max([top_error, *errors])
        last_step = max([last_step, *steps, *steps_e])
        handles.append(Line2D([], [], color=colour, linewidth=2.4, label=_curve_label(r)))
    return handles, (top_loss, top_error, last_step)


def _curve_label(r):
    """A row's legend entry: median test error (failed?), number of runs, the paper's figure."""
    median = "no finished run" if r.median is None else f"{r.median:.2f}%"
    return (
        f"{r.row.name}: {median}"
        + (f" ({FAIL})" if r.median is not None and r.median > FAIL_ABOVE else "")
        + f", {len(r.errors)} run{'s' if len(r.errors) != 1 else ''}; "
        f"paper {_paper(r.row.paper)}"
    )


def _label_axes(loss_axes, error_axes, top_loss, top_error, last_step):
    """Axis labels, limits (from the curves' tops and last step), iteration ticks, grid."""
    from matplotlib.ticker import FuncFormatter  # optional, as in plot_curves

    loss_axes.set_xlabel("iterations")
    loss_axes.set_ylabel("training loss (dashed)")
    error_axes.set_ylabel("test error % (bold)")
    loss_axes.set_ylim(0, max(0.1, 1.05 * top_loss))
    error_axes.set_ylim(0, min(100.0, max(5.0, 1.1 * top_error)))
    loss_axes.set_xlim(0, max(1, last_step) * 1.02)
    loss_axes.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _: f"{x / 1000:g}k" if last_step >= 5000 and x else f"{x:g}")
    )
    loss_axes.grid(True, alpha=0.3)


def _add_legend_and_title(figure, table, results, handles, legend_height):
    """The legend (the rows, then the two line styles) under the axes; the title above."""
    from matplotlib.lines import Line2D  # optional, as in plot_curves

    handles = handles + [
        Line2D([], [], color="grey", linewidth=1.0, linestyle="--", label="training loss (left)"),
        Line2D([], [], color="grey", linewidth=2.4, label="test error (right)"),
    ]
    height = figure.get_figheight()
    figure.legend(
        handles=handles,
        loc="lower center",
        ncol=2,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.1 / height),
    )
    trained = sorted({r.trained_as for r in results if r.trained_as})
    subtitle = "; ".join(trained) if len(trained) <= 2 else "runs of several settings"
    figure.suptitle(
        f"{TITLES[table]}\nruns: {subtitle or 'none finished'}; median over seeds at each "
        "iteration",
        fontsize=10,
    )
    figure.subplots_adjust(
        left=0.08, right=0.92, top=1 - 0.75 / height, bottom=(legend_height + 0.55) / height
    )


def write_outputs(table, results, root):
    """Writes `<root>/table.md`, `table.csv` and `curves.png`; returns the markdown."""
    os.makedirs(root, exist_ok=True)
    text = format_markdown(table, results, root)
    run_dir.atomic_write(os.path.join(root, "table.md"), text)
    run_dir.atomic_write(os.path.join(root, "table.csv"), format_csv(table, results))
    image = plot_curves(table, results)
    written = ["table.md", "table.csv"]
    if image is None:
        print(
            "matplotlib is not installed (pip install 'keras-preact[analysis]'): no curves.png.",
            file=sys.stderr,
        )
    else:
        run_dir.atomic_write(os.path.join(root, "curves.png"), image)
        written.append("curves.png")
    print(text)
    print(f"Wrote {', '.join(os.path.join(root, name) for name in written)}.")
    return text


# ---------------------------------------------------------------- command line


def default_folder(table):
    """`--root`'s default under runs/: table1, table2, cifar1001, cifar100."""
    return f"table{table}" if table.isdigit() else table


def define_flags():
    """Defines the subcommand's flags on absl's FLAGS (a name another subcommand defined is shared)."""

    def define(kind, name, *arguments):
        if name not in FLAGS:
            getattr(flags, f"DEFINE_{kind}")(name, *arguments)

    define("enum", "table", None, list(TABLES), "The paper's table to run (required).")
    define("list", "rows", [], "Rows to run, by name (default: all the table's rows).")
    define("list", "seeds", ["1", "2", "3", "4", "5"], "Seeds of each row (the paper: 5).")
    define(
        "string",
        "root",
        None,
        "Runs go to <root>/<row>/seed<k>/ (default: runs/table1, runs/table2, runs/cifar1001, "
        "runs/cifar100).",
    )
    define("bool", "dry_run", False, "Print the runs' commands, one per line; run nothing.")
    define("bool", "collect", False, "Only collect the finished runs into the table.")
    define("boolean", "verbose", False, "Show TensorFlow's own logs too (-v for short), "
           "in every run as well (--verbose=2).")  # fmt: skip


def usage():
    """`--help`: what the subcommand does, then its flags."""
    return f"{__doc__}\nFlags:\n{FLAGS.module_help(__name__)}"


def _pass_through(args):
    """The training flags after `--`, checked: flags, and none of the runner's own."""
    if args and not args[0].startswith("-"):
        raise app.UsageError(
            f"Unexpected argument {args[0]!r}: training flags go after --, e.g. "
            "-- --dataset=digits --depth=20."
        )
    for arg in args:
        name = arg.lstrip("-").split("=", 1)[0]
        if arg.startswith("-") and name in RUNNER_FLAGS:
            raise app.UsageError(f"{arg}: the runner sets --{name} (use --seeds and --root).")
    return list(args)


def main(argv):
    """Runs (or prints) the table's runs, then collects them; exits non-zero if one failed."""
    extra = _pass_through(argv[1:])
    if FLAGS.verbose:  # before the pass-through flags, which may say otherwise
        extra = ["--verbose=2", *extra]
    if FLAGS.table is None:
        raise app.UsageError(f"--table is required: one of {', '.join(TABLES)}.")
    if FLAGS.dry_run and FLAGS.collect:
        raise app.UsageError("--dry_run prints the commands, --collect reads the runs: one only.")
    try:
        seeds = [int(seed) for seed in FLAGS.seeds]
    except ValueError:
        raise app.UsageError(f"--seeds takes integers, not {','.join(FLAGS.seeds)!r}.") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise app.UsageError("--seeds needs one or more different integers.")
    root = FLAGS.root or os.path.join("runs", default_folder(FLAGS.table))
    try:
        runs = plan(FLAGS.table, FLAGS.rows, seeds, root, extra)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if FLAGS.dry_run:
        for run in runs:
            print(shlex.join(run.command))
        return
    failures, stopped = [], None
    if not FLAGS.collect:
        failures, stopped = run_all(runs)
    if stopped:
        left = sum(not run.finished() for run in runs)
        print(
            f"Stopped by {stopped.name}: {left} of {len(runs)} runs unfinished. Run the same "
            "command again to go on (finished runs are skipped, a started one resumes from "
            "its checkpoint); --collect writes the table of those finished.",
            file=sys.stderr,
        )
        sys.exit(128 + stopped)
    write_outputs(FLAGS.table, collect(FLAGS.table, FLAGS.rows, seeds, root), root)
    if failures:
        print(f"{len(failures)} of {len(runs)} runs failed:", file=sys.stderr)
        for run, code, lines in failures:
            command = shlex.join(run.command)
            print(f"  {run.row.name} seed {run.seed} (exit {code}): {command}", file=sys.stderr)
            print(_indent(lines), file=sys.stderr)
        sys.exit(1)
