"""Runs every benchmark script and writes their sections as one report, BENCHMARKS.md.

Each script in `BENCHMARKS` runs in its own process (peak-memory figures and
the TFLite interpreter need one), with the Python this script runs with, from
the repository root, with the flags of the chosen `--settings`:

* `report`: the full run of `make bench` (about 22 minutes on a 2-core machine);
* `smoke`: tiny runs that check every script works (tests/test_benchmarks.py);
  their figures mean nothing.

Every script follows one contract (benchmarks/README.md): its stdout is one
Markdown section (a `## Title` line, a paragraph, table(s), then target lines
`- <what>: <measured> (target <target>): met` or `...: NOT met`); progress goes
to stderr, which this script passes on. The report has the date, the machine
and the library versions, a summary table of every target line, then each
section verbatim with its command line and wall time.

The report is written atomically (a temporary file renamed over `--output`).
A script that fails (non-zero exit, `--timeout`, or stdout that breaks the
contract) gets a section marked FAILED with the end of its stderr, keeps its
previous section from the old report below that, and makes this script exit 1
after writing the report. A script not run this time (`--only`) keeps its
section from the old report. Usage errors exit 2 and leave the file alone.
From the repository root:

    python benchmarks/report.py --settings=report --output=BENCHMARKS.md   # make bench
    python benchmarks/report.py --settings=smoke --only=training_step.py --output=/tmp/b.md
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

# (script, {settings: its flags}). Each script's own defaults are its full
# settings unless "report" says otherwise; "smoke" should finish in seconds
# after the imports.
BENCHMARKS = [
    (
        "model_throughput.py",
        {
            # ResNet-50 at 224, batch 16: the peer, paper and keras layouts, each in float32,
            # float32 with XLA and mixed_bfloat16, 2 rounds of 3 steps; then the batch grid
            # (the peer and the paper layout at batch 1, 16 and 64, float32 and, on a bf16
            # CPU, mixed_bfloat16) in the same rounds, and the GEMM rates: about 10 minutes.
            "report": [],
            "smoke": [
                "--image_size=32",
                "--batch_size=1",
                "--steps=1",
                "--rounds=1",
                "--layouts=paper",
                "--configs=float32",
                "--batch_grid=",
            ],
        },
    ),
    (
        "memory.py",
        {
            # ResNet-164 and ResNet-1001 at batch 16; ResNet-1001's two graphs take most of it.
            "report": ["--batch_size=16", "--steps=2"],
            "smoke": ["--depths=8", "--batch_size=2", "--steps=1", "--rounds=1"],
        },
    ),
    (
        "input_pipeline.py",
        {
            "report": [],  # 512 images per round, 5 rounds, plus 3 ResNet-50 training steps
            "smoke": [
                "--num_images=64",
                "--num_files=8",
                "--batch_size=16",
                "--rounds=1",
                "--train_steps=1",
                "--train_batch=2",
                "--train_model=ResNet18V2",
                "--train_image_size=64",
            ],
        },
    ),
    (
        "augment_pipeline.py",
        {
            # 3 rounds of 512 images of ours and of timm's DataLoader (when torch, torchvision
            # and timm are importable; add --peer_path=<their site-packages> with --extra),
            # plus 2 ResNet-50 training steps: about a minute.
            "report": [],
            "smoke": [
                "--num_images=16",
                "--num_files=4",
                "--batch_size=8",
                "--image_size=32",
                "--rounds=1",
                "--train_steps=1",
                "--train_batch=2",
                "--train_model=ResNet18V2",
                "--train_image_size=32",
            ],
        },
    ),
    (
        "tflite_latency.py",
        {
            "report": [],  # ResNet-50 at 224, 2 threads, 32 calibration images: about 2 minutes
            "smoke": [
                "--model=ResNet20V2",
                "--crop_size=32",
                "--runs=2",
                "--rounds=1",
                "--calibration_images=4",
                "--variants=float32,int8",
            ],
        },
    ),
    (
        "serving_latency.py",
        {
            # ResNet-50 at 224, batch 1 and 16: the SavedModel (plain, jit_compile=True,
            # frozen_weights=True, bfloat16 on a bf16 CPU, plain in a process of its own and
            # in one with TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1), ONNX Runtime and TFLite float32,
            # 5 rounds: about 2.5 minutes. The smoke run skips XLA, frozen and the control.
            "report": [],
            "smoke": [
                "--model=ResNet20V2",
                "--crop_size=32",
                "--batches=1,2",
                "--runs=2",
                "--batch_runs=1",
                "--rounds=1",
                "--saved_models=plain,bfloat16,onednn_frozen",
            ],
        },
    ),
    (
        "training_step.py",
        {
            "report": [],  # ResNet-20, batch 64, 4 rounds of 3 epochs of 5 steps: about a minute
            "smoke": [
                "--depth=8",
                "--width=8",
                "--batch_size=16",
                "--steps=2",
                "--epochs=2",
                "--rounds=1",
            ],
        },
    ),
    (
        # Its defaults are the GPU settings; without a GPU it shrinks them to a CPU
        # smoke run and says so (make bench-gpu measures a GPU machine).
        "gpu_training.py",
        {
            "report": [],
            # Mixed precision and XLA stay on: this run is what checks their code path.
            "smoke": ["--image_size=32", "--batch_size=2", "--steps=1", "--num_files=4"],
        },
    ),
]
SETTINGS = ("report", "smoke")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STDERR_TAIL_LINES = 40
# `- <what>: <measured> (target <target>): met` (or `NOT met`); <measured> has no colon.
TARGET_LINE = re.compile(
    r"^- (?P<what>.+?): (?P<measured>[^:]+?) \(target (?P<target>.+?)\): (?P<status>met|NOT met)\s*$"
)
TABLE_RULE = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+\s*$")
# Each section of the report sits between these markers, so a later run can keep it.
BEGIN = re.compile(
    r"^<!-- benchmark: (?P<name>\S+) \| (?P<status>ok|failed) \| (?P<date>[^|]+?) -->$"
)
END = "<!-- /benchmark: {name} -->"
KEPT_BEGIN, KEPT_END = "<!-- kept -->", "<!-- /kept -->"
# TensorFlow's C++ notices from before its logging starts (oneDNN is on, no CUDA driver
# on a CPU machine): printed whatever TF_CPP_MIN_LOG_LEVEL says, and never the cause
# of a failure, so they are left out of what is passed on and of a failure's stderr.
START_NOISE = re.compile(
    r"^(I0000 00:00:[\d.]+ +\d+ \S+:\d+\] |"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called)"
)

flags.DEFINE_enum("settings", "report", SETTINGS, "flag set of every script (see BENCHMARKS)")
flags.DEFINE_string(
    "output", "BENCHMARKS.md", "the report file (written atomically); empty: no file, stdout only"
)
flags.DEFINE_list("only", [], "run only these scripts (e.g. training_step.py,memory.py)")
flags.DEFINE_multi_string(
    "extra",
    [],
    "SCRIPT:FLAG, one more flag for one script (repeatable), e.g. training_step.py:--rounds=5",
)
flags.DEFINE_integer("timeout", 1800, "seconds a script may run before it is stopped (failed)")
flags.DEFINE_integer(
    "jobs",
    1,
    "scripts run at once; more than 1 only with --settings=smoke (a measurement needs the "
    "machine to itself)",
)
FLAGS = flags.FLAGS


def log(message):
    print(f"report: {message}", file=sys.stderr, flush=True)


class UsageError(Exception):
    """Bad flags: reported in one line, exit status 2, the output file untouched."""


# ---------------------------------------------------------------- machine


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def _commit():
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


PROBE = """
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
import keras
gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
        for g in tf.config.list_physical_devices("GPU")]
try:
    import keras_cv
    keras_cv_version = keras_cv.__version__
except ImportError:
    keras_cv_version = None
except Exception as e:  # installed but broken
    keras_cv_version = f"not importable ({type(e).__name__}: {e})"
print("PROBE " + json.dumps({"tensorflow": tf.__version__, "keras": keras.__version__,
                            "keras_cv": keras_cv_version, "gpus": gpus}))
"""


def machine():
    """What the report says about the machine and the libraries (TF probed in a child process)."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "commit": _commit(),
        "tensorflow": None,
        "keras": None,
        "keras_cv": None,
        "gpus": None,
    }
    try:
        probe = subprocess.run(
            [sys.executable, "-c", PROBE],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=_child_env(),
        )
        lines = [line for line in probe.stdout.splitlines() if line.startswith("PROBE ")]
        if lines:
            info.update(json.loads(lines[-1][len("PROBE ") :]))
        else:
            log(f"could not read TensorFlow's version and GPUs: {_tail(probe.stderr, 3)}")
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"could not read TensorFlow's version and GPUs: {e}")
    return info


def machine_line(info):
    """The machine in a few words, for each section's run line."""
    gpus = info["gpus"]
    if gpus is None:
        gpu = "GPUs unknown"
    elif gpus:
        gpu = ", ".join(f"{n} x {g}" for g, n in collections.Counter(gpus).items())
    else:
        gpu = "no GPU"
    return f"{info['cpu']}, {info['cores']} cores, {gpu}"


def machine_table(info):
    memory = f"{info['memory_gib']:.1f} GiB" if info["memory_gib"] else "unknown"
    gpus = info["gpus"]
    gpu = "unknown" if gpus is None else (", ".join(gpus) if gpus else "none")
    rows = [
        ("CPU", f"{info['cpu']} ({info['cores']} cores)"),
        ("Memory", memory),
        ("GPUs", gpu),
        ("OS", info["os"]),
        ("Python", info["python"]),
        ("TensorFlow", info["tensorflow"] or "unknown"),
        ("Keras", info["keras"] or "unknown"),
        ("keras-cv", info["keras_cv"] or "not installed"),
    ]
    if info["commit"]:
        rows.append(("keras-preact commit", info["commit"]))
    return ["| This run's machine and software | |", "|---|---|"] + [
        f"| {k} | {_cell(v)} |" for k, v in rows
    ]


# ---------------------------------------------------------------- running


@dataclasses.dataclass
class Result:
    name: str
    command: str
    seconds: float = 0.0
    returncode: int | None = None
    stdout: str = ""
    stderr_tail: str = ""
    error: str | None = None  # why it failed; None when it ran and kept the contract
    section: str = ""  # its stdout, stripped, when it kept the contract


def _child_env():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _display_path(path):
    """`path` relative to the repository; "python" for an interpreter outside it."""
    relative = os.path.relpath(path, ROOT)
    return "python" if relative.startswith("..") else relative


def _display_arg(arg):
    """`arg` with the paths of this machine outside the repository (`--peer_path=/...`)
    replaced by `<local path>`: the report speaks of the project only."""
    name, equals, value = arg.partition("=")
    paths = value.split(",")
    if equals and any(
        os.path.isabs(p) and os.path.relpath(p, ROOT).startswith("..") for p in paths
    ):
        return f"{name}=<local path>"
    return arg


def _tail(text, lines):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_script(name, args, timeout):
    """Runs benchmarks/<name> with `args`; returns its `Result` (stderr passed on as it comes)."""
    argv = [sys.executable, os.path.join("benchmarks", name), *args]
    shown = [_display_path(sys.executable), *map(_display_arg, argv[1:])]
    result = Result(name, shlex.join(shown))
    if not os.path.isfile(os.path.join(ROOT, "benchmarks", name)):
        result.error = f"benchmarks/{name} does not exist"
        return result
    stderr = collections.deque(maxlen=STDERR_TAIL_LINES)
    stdout = []
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )

    def pass_on():
        for line in proc.stderr:
            if START_NOISE.match(line):
                continue
            stderr.append(line.rstrip("\n"))
            sys.stderr.write(f"  {name} | {line}")
            sys.stderr.flush()

    readers = [
        threading.Thread(target=pass_on, daemon=True),
        threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        result.returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        result.error = f"stopped after the --timeout of {timeout} s"
    for reader in readers:
        reader.join()
    result.seconds = time.perf_counter() - start
    result.stdout = "".join(stdout)
    result.stderr_tail = "\n".join(stderr)
    if result.error is None and result.returncode:
        result.error = f"exit status {result.returncode}"
    if result.error is None:
        problem = contract_problem(result.stdout)
        if problem:
            result.error = f"its stdout does not follow the benchmarks' contract: {problem}"
        else:
            result.section = result.stdout.strip()
    return result


def contract_problem(text):
    """Why `text` is not one contract section (see the module docstring), or None."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("## "):
        return "it does not start with a '## Title' line"
    headings, fenced = 0, False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"^#{1,2} ", line):
            headings += 1
    if headings != 1:
        return f"it has {headings} '#'/'##' headings, not one section"
    if not any(TABLE_RULE.match(line) for line in lines):
        return "it has no Markdown table"
    for line in lines:
        if line.startswith("- ") and "(target " in line and not TARGET_LINE.match(line):
            return f"a target line is not '- <what>: <measured> (target <target>): met': {line!r}"
    return None


# ---------------------------------------------------------------- the report


def targets(section):
    """The target lines of a section, as `TARGET_LINE` matches."""
    return [m for m in map(TARGET_LINE.match, section.splitlines()) if m]


def title(section):
    return section.splitlines()[0][3:].strip()


def anchor(heading):
    """GitHub's anchor of a heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return "#" + slug.replace(" ", "-")


def _cell(text):
    return str(text).replace("|", "\\|")


def read_previous(path):
    """`{name: (status, date, text)}`: the marked sections of an existing report (else empty)."""
    if not path or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, current = {}, None
    for line in lines:
        match = BEGIN.match(line)
        if match:
            current = (match["name"], match["status"], match["date"], [])
        elif current and line == END.format(name=current[0]):
            blocks[current[0]] = (current[1], current[2], "\n".join(current[3]).strip())
            current = None
        elif current:
            current[3].append(line)
    return blocks


def kept_good(previous):
    """`(date, text)` of the last good section in a previous block (a failed block keeps one)."""
    if previous is None:
        return None
    status, date, text = previous
    if status == "ok":
        return date, text
    if KEPT_BEGIN in text and KEPT_END in text:
        inner = text.split(KEPT_BEGIN, 1)[1].split(KEPT_END, 1)[0].strip()
        match = re.match(r"^\((?P<date>[^)]*)\)\n", inner)
        if match:
            return match["date"], inner[match.end() :].strip()
    return None


def run_line(result, date, info):
    return (
        f"Ran `{result.command}` from the repository root in {result.seconds:.0f} s "
        f"({date}; {machine_line(info)})."
    )


def ok_block(result, date, info):
    return f"{result.section}\n\n{run_line(result, date, info)}"


def failed_block(result, date, info, previous):
    lines = [
        f"## {result.name}: FAILED",
        "",
        f"**{result.error}.** {run_line(result, date, info)} The end of its stderr:",
        "",
        "```text",
        result.stderr_tail.replace("```", "'''") or "(nothing)",
        "```",
    ]
    if result.stdout.strip() and result.returncode == 0:
        lines += ["", "Its stdout:", "", "```text", result.stdout.strip().replace("```", "'''")]
        lines += ["```"]
    good = kept_good(previous)
    if good:
        kept_date, text = good
        lines += [
            "",
            f"<details><summary>Its previous result ({kept_date}), kept</summary>",
            "",
            KEPT_BEGIN,
            f"({kept_date})",
            text,
            KEPT_END,
            "",
            "</details>",
        ]
    return "\n".join(lines)


def build_report(results, previous, info, date, settings):
    """The report's text: header, summary, then each section in `BENCHMARKS` order."""
    blocks, summary = [], []
    for name, _ in BENCHMARKS:
        if name in results:
            result = results[name]
            if result.error is None:
                status, text = "ok", ok_block(result, date, info)
                block_date, note = date, ""
            else:
                status, text = "failed", failed_block(result, date, info, previous.get(name))
                block_date, note = date, ""
                summary.append(
                    f"| [{name}]({anchor(f'{name}: FAILED')}) | (the script failed: "
                    f"{_cell(result.error)}) | | | **FAILED** |"
                )
        elif name in previous:
            status, block_date, text = previous[name]
            note = f" (kept from {block_date})"
        else:
            continue
        if status == "ok":
            heading = title(text)
            for m in targets(text):
                met = "met" if m["status"] == "met" else "**NOT met**"
                summary.append(
                    f"| [{_cell(heading)}]({anchor(heading)}){note} | {_cell(m['what'])} | "
                    f"{_cell(m['measured'])} | {_cell(m['target'])} | {met} |"
                )
        blocks.append(
            f"<!-- benchmark: {name} | {status} | {block_date} -->\n{text}\n{END.format(name=name)}"
        )
    kept = [name for name in previous if name not in results and name in dict(BENCHMARKS)]
    about = [
        f"Written on {date} by `python benchmarks/report.py --settings={settings}`"
        + (" (`make bench`)." if settings == "report" else ".")
    ]
    if settings == "smoke":
        about.append(
            "These are **smoke** settings: tiny runs that check the scripts work; "
            "their figures mean nothing."
        )
    about.append(
        "Each section below is one benchmark script's stdout, verbatim (each script runs in "
        "its own process), followed by its exact command line, wall time, date and machine; "
        "[benchmarks/README.md](benchmarks/README.md) says what each one measures."
    )
    if kept:
        about.append(
            f"Not run this time, kept from an earlier report (their last line has their date "
            f"and machine): {', '.join(f'`{name}`' for name in kept)}."
        )
    header = [
        "# keras-preact benchmarks",
        "",
        " ".join(about),
        "",
        *machine_table(info),
        "",
        "## Summary",
        "",
        "Every target line of the sections below.",
        "",
        "| Benchmark | What | Measured | Target | Status |",
        "|---|---|---|---|---|",
        *summary,
    ]
    if not summary:
        header.append("| (no target lines) | | | | |")
    return "\n".join(header) + "\n\n" + "\n\n".join(blocks) + "\n"


def write_atomically(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".report-", suffix=".md.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---------------------------------------------------------------- main


def selected():
    """`[(name, args)]` to run, from `--only`, `--settings` and `--extra`."""
    known = [name for name, _ in BENCHMARKS]
    unknown = [name for name in FLAGS.only if name not in known]
    if unknown:
        raise UsageError(
            f"unknown benchmark(s) in --only: {', '.join(unknown)} (known: {', '.join(known)})"
        )
    extra = collections.defaultdict(list)
    for item in FLAGS.extra:
        name, sep, flag = item.partition(":")
        if not sep or name not in known or not flag:
            raise UsageError(f"--extra={item!r}: expected SCRIPT:FLAG with SCRIPT one of {known}")
        extra[name].append(flag)
    only = set(FLAGS.only) or set(known)
    return [
        (name, [*sets[FLAGS.settings], *extra[name]]) for name, sets in BENCHMARKS if name in only
    ]


def run_all(jobs):
    """{name: Result} of running `jobs` ([(name, args)]), `--jobs` at a time, in order."""

    def run_one(position, name, args):
        log(f"[{position}/{len(jobs)}] {name}: {shlex.join(['benchmarks/' + name, *args])}")
        result = run_script(name, args, FLAGS.timeout)
        if result.error:
            log(f"{name}: FAILED after {result.seconds:.0f} s ({result.error})")
        else:
            found = targets(result.section)
            missed = sum(m["status"] != "met" for m in found)
            log(
                f"{name}: done in {result.seconds:.0f} s "
                f"({len(found)} target line(s), {missed} not met)"
            )
        return result

    with concurrent.futures.ThreadPoolExecutor(max_workers=FLAGS.jobs) as pool:
        futures = [pool.submit(run_one, i, *job) for i, job in enumerate(jobs, 1)]
        return {future.result().name: future.result() for future in futures}


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.timeout < 1:
        raise UsageError("--timeout must be at least 1 second")
    if FLAGS.jobs < 1 or (FLAGS.jobs > 1 and FLAGS.settings != "smoke"):
        raise UsageError(
            f"--jobs={FLAGS.jobs}: 1, or more with --settings=smoke only (measurements running "
            "side by side would measure each other)"
        )
    jobs = selected()
    output = FLAGS.output
    if output and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise UsageError(f"--output {output!r}: its folder does not exist")
    previous = read_previous(output)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    log(f"{machine_line(info)}; {len(jobs)} script(s), --settings={FLAGS.settings}")
    results = run_all(jobs)
    text = build_report(results, previous, info, date, FLAGS.settings)
    if output:
        write_atomically(output, text)
    for result in results.values():  # what this run measured, on stdout too
        block = ok_block(result, date, info) if result.error is None else None
        print(block or failed_block(result, date, info, None), end="\n\n", flush=True)
    failed = [r for r in results.values() if r.error]
    where = f"; report written to {output}" if output else ""
    if failed:
        names = ", ".join(f"{r.name} ({r.error})" for r in failed)
        log(f"{len(failed)} of {len(results)} script(s) FAILED: {names}{where}")
        sys.exit(1)
    log(f"all {len(results)} script(s) ran{where}")


def run():
    def guarded(argv):
        try:
            main(argv)
        except UsageError as e:
            print(f"report.py: error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)


if __name__ == "__main__":
    run()
