"""benchmarks/report.py end to end: every script on its smoke settings, and a failing script.

The smoke run is one subprocess for the module (each benchmark script is one
more process under it); its figures mean nothing, only the report's shape is checked.
"""

import ast
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "benchmarks", "report.py")


def benchmark_names():
    """The scripts in report.py's BENCHMARKS table (read, not imported: it defines absl flags)."""
    with open(REPORT) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "BENCHMARKS":
            return [name for name, _ in ast.literal_eval(node.value)]
    raise AssertionError("report.py has no BENCHMARKS table")


SCRIPTS = benchmark_names()
# The contract's target line (benchmarks/README.md).
TARGET_LINE = re.compile(
    r"^- (?P<what>.+?): (?P<measured>[^:]+?) \(target (?P<target>.+?)\): (?P<status>met|NOT met)$"
)

pytestmark = pytest.mark.slow


def run_report(*args):
    return subprocess.run(
        [sys.executable, REPORT, "--settings=smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def sections(text):
    """{script: its block's text}, from the report's markers."""
    found = re.findall(
        r"^<!-- benchmark: (\S+) \| (ok|failed) \| [^>]+ -->\n(.*?)\n<!-- /benchmark: \1 -->$",
        text,
        flags=re.S | re.M,
    )
    return {name: (status, body) for name, status, body in found}


def summary_rows(text):
    part = text.split("## Summary", 1)[1]
    part = part[: part.index("<!-- benchmark:")] if "<!-- benchmark:" in part else part
    return [line for line in part.splitlines() if line.startswith("| ") and "---" not in line]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("benchmarks") / "BENCHMARKS.md"
    proc = run_report(f"--output={output}", "--jobs=2")
    text = output.read_text() if output.exists() else ""
    return proc, output, text


def test_smoke_report(smoke):
    proc, _, text = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert text.startswith("# keras-preact benchmarks")
    assert re.search(r"Written on \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "| CPU | " in text and "| Memory | " in text and "| GPUs | " in text
    import tensorflow as tf

    assert f"| TensorFlow | {tf.__version__} |" in text
    assert "| Python | " in text and "| Keras | " in text and "| keras-cv | " in text

    found = sections(text)
    assert sorted(found) == sorted(SCRIPTS)
    rows = summary_rows(text)
    for name in SCRIPTS:
        status, body = found[name]
        assert status == "ok", body
        lines = body.splitlines()
        assert lines[0].startswith("## ")
        assert any(re.match(r"^\|(\s*:?-{3,}:?\s*\|)+$", line) for line in lines), name
        # The last line: the exact command line and the wall time.
        assert lines[-1].startswith("Ran `") and f"benchmarks/{name}" in lines[-1]
        assert re.search(r"in \d+ s", lines[-1])
        # Every target line is in the summary, with its measured value and target.
        for line in lines:
            if line.startswith("- ") and "(target " in line:
                m = TARGET_LINE.match(line)
                assert m, line
                assert any(
                    m["what"] in row and m["measured"] in row and m["target"] in row for row in rows
                ), (line, rows)
    # The sections are also printed (make bench-gpu shows its section so).
    assert "## Custom training loop vs Keras fit" in proc.stdout
    if "gpu_training.py" in found and not tf.config.list_physical_devices("GPU"):
        assert "no GPU: CPU run, figures are not GPU figures" in found["gpu_training.py"][1]


def test_failures_leave_a_marked_report_and_exit_non_zero(smoke, tmp_path):
    proc, output, text = smoke
    assert proc.returncode == 0 and text
    previous = tmp_path / "BENCHMARKS.md"
    previous.write_text(text)

    # A usage error (a script that does not exist) touches nothing.
    bad = run_report(f"--output={previous}", "--only=no_such_benchmark.py")
    assert bad.returncode == 2
    assert "no_such_benchmark.py" in bad.stderr and "training_step.py" in bad.stderr
    assert previous.read_text() == text
    side_by_side = run_report(f"--output={previous}", "--settings=report", "--jobs=2")
    assert side_by_side.returncode == 2 and "--jobs=2" in side_by_side.stderr
    assert previous.read_text() == text

    # A script that fails: its section is marked FAILED with its stderr, its
    # previous result is kept below, the other sections stay, and the exit is 1.
    failed = run_report(
        f"--output={previous}", "--only=training_step.py", "--extra=training_step.py:--no_such_flag"
    )
    assert failed.returncode == 1
    assert "training_step.py" in failed.stderr and "FAILED" in failed.stderr
    new = previous.read_text()
    assert new != text
    found = sections(new)
    status, body = found["training_step.py"]
    assert status == "failed"
    assert body.startswith("## training_step.py: FAILED")
    assert "exit status 1" in body and "no_such_flag" in body  # absl's error, from stderr
    assert "Its previous result" in body and "## Custom training loop vs Keras fit" in body
    assert "**FAILED**" in "\n".join(summary_rows(new))
    for name in SCRIPTS:
        if name != "training_step.py":
            assert found[name] == sections(text)[name]  # kept as it was
            assert f"`{name}`" in new.split("## Summary")[0]  # named as kept in the header
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
