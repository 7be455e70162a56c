"""What the benchmark scripts share: the target line every benchmark prints and `report.py`
reads into its summary, progress lines on stderr, stdout kept for the section alone, and
BatchNormalization statistics measured on real images (a trained-like net).

>>> target_line("int8 / SavedModel latency", "0.24x", "<= 0.5x", True)
'- int8 / SavedModel latency: 0.24x (target <= 0.5x): met'
"""

import contextlib
import os
import sys
import time

_START = time.perf_counter()


def log(message):
    """One progress line on stderr, with the seconds since the script started."""
    print(f"[{time.perf_counter() - _START:5.1f} s] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stdout_to_stderr():
    """Everything written to stdout meanwhile (Python or native) goes to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    python_stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout = python_stdout


def measure_bn_statistics(model, images):
    """Every BatchNormalization's moving statistics set to those of `images` (one pass)."""
    import keras

    norms = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_cpu_flags():
    """The bfloat16 instruction flags /proc/cpuinfo lists (empty where it lists none or is absent)."""
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        return []
    return [flag for flag in BF16_CPU_FLAGS if flag in words]


def target_line(what, measured, target, met):
    """`- <what>: <measured> (target <target>): met` (or `NOT met`); `measured` has no colon."""
    return f"- {what}: {measured} (target {target}): {'met' if met else 'NOT met'}"
