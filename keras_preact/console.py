"""What keras-preact's command lines share: a quiet start, `-v`, a `--help` that lists their flags.

On a machine without a GPU, TensorFlow starts with C++ log lines that look like
failures (`E0000 ... failed call to cuInit`, "Could not find cuda drivers",
oneDNN notices, twice over since two of its libraries log), and the TFLite
converter and interpreter print their own. A process running one of our
commands (`COMMANDS`, `CHECKOUT_SCRIPTS`, `python -m keras_preact...` or
`python -m export`) therefore starts quietly: `quiet_start()`, which
`keras_preact/__init__.py` calls before anything imports TensorFlow, sets
`TF_CPP_MIN_LOG_LEVEL=3` (unless the environment sets it) and imports
TensorFlow with native stderr hidden (the lines it prints before its logging is
initialised ignore that level; they are shown if the import fails). The
commands then keep absl's and TensorFlow's Python loggers at warnings, and say
in one plain line when they run on the CPU (`device_line`). `-v` or
`--verbose` brings everything back. A library user's `import keras_preact`
changes nothing: only our own command lines are quieted.

>>> running_command(["/venv/bin/keras-preact-export", "--model_dir=runs/a"])
True
>>> running_command(["train.py"]), wants_tensorflow_logs(["recipes/cifar.py", "-v"])
(False, True)
>>> with native_output_hidden():
...     _ = os.write(2, b"never shown")
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile

# Console scripts (setup.py), as sys.argv[0] names them.
COMMANDS = (
    "keras-preact-cifar",
    "keras-preact-imagenet",
    "keras-preact-export",
    "keras-preact-client",
    "keras-preact-predict",
)
# The same commands run from a checkout.
CHECKOUT_SCRIPTS = ("recipes/cifar.py", "recipes/imagenet.py", "export/__main__.py")
# Arguments that ask for TensorFlow's own logs (a bare -v is expanded by `run`).
VERBOSE_ARGS = ("-v", "--verbose", "--verbose=2", "--verbose=true", "--verbose=True")
HELP_ARGS = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort")


def running_command(argv=None):
    """Whether this process runs one of keras-preact's command lines (judged by `argv`)."""
    argv = sys.argv if argv is None else argv
    program = argv[0] if argv else ""
    if program == "-m":  # `python -m MODULE` while MODULE is being imported
        original = list(getattr(sys, "orig_argv", ()))
        module = original[original.index("-m") + 1] if "-m" in original[:-1] else ""
        return module == "export" or module.startswith("keras_preact.")
    path = program.replace(os.sep, "/")
    return os.path.basename(path) in COMMANDS or path.endswith(CHECKOUT_SCRIPTS)


def wants_tensorflow_logs(argv=None):
    """Whether the command line asks for TensorFlow's own logs (`-v`, `--verbose`, ...)."""
    argv = sys.argv if argv is None else argv
    return any(arg in VERBOSE_ARGS for arg in argv[1:])


@contextlib.contextmanager
def native_output_hidden(fds=(2,)):
    """Hides what is written to the file descriptors `fds` (C++ code included) inside the block.

    What was hidden is written out after all if the block raises, so a
    failure keeps its explanation.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile() as hidden:
        for fd in fds:
            os.dup2(hidden.fileno(), fd)
        try:
            yield
        except BaseException:
            _restore(saved)
            hidden.seek(0)
            text = hidden.read()
            while text:
                text = text[os.write(2, text) :]
            raise
        finally:
            _restore(saved)


def _restore(saved):
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in list(saved.items()):
        os.dup2(copy, fd)
        os.close(copy)
        del saved[fd]


def command_line_quiet():
    """`native_output_hidden()` in our command lines (unless `-v`); a no-op context elsewhere.

    For C++ code that prints to stderr whatever the log level (the TFLite
    converter's and interpreter's notices).
    """
    if running_command() and not wants_tensorflow_logs():
        return native_output_hidden()
    return contextlib.nullcontext()


def quiet_start():
    """Before TensorFlow is imported: quiets its start when this process runs one of our commands."""
    if "tensorflow" in sys.modules or not running_command() or wants_tensorflow_logs():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_output_hidden():
        import tensorflow  # noqa: F401


def quiet_python_logs():
    """absl's and TensorFlow's Python loggers at warnings/errors (unless `-v` or `--verbosity`)."""
    from absl import flags, logging

    if wants_tensorflow_logs() or (flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present):
        return
    import tensorflow as tf

    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown our output
    tf.get_logger().setLevel("ERROR")


def device_line():
    """One plain line saying that this machine has no GPU, or None when it has one."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return None
    return f"No GPU found: running on the CPU ({os.cpu_count()} cores)."


def run(main, usage, *, verbose="--verbose"):
    """absl's `app.run(main)`, but `-h`/`--help` print `usage()` and exit 0, and a bare `-v` is `verbose`.

    absl's own --help lists only the flags the `__main__` module defines (none
    of ours: they are defined in the package) and exits 1; absl's `-v` is
    `--verbosity` and needs a value.
    """
    from absl import app

    app.run(main, flags_parser=functools.partial(_parse, usage, verbose))


def _parse(usage, verbose, argv):
    from absl import app

    args = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if any(arg in HELP_ARGS for arg in args):
        print(usage())
        sys.exit(0)
    argv = [verbose if arg == "-v" else arg for arg in argv]
    return app.parse_flags_with_usage(argv)


def command_help(doc, module_name):
    """`--help` of a command module: its docstring, then the flags it defines.

    absl files the flags of a module run as `__main__` under its path.
    """
    from absl import flags

    module = sys.argv[0] if module_name == "__main__" else module_name
    return f"{doc}\nFlags:\n{flags.FLAGS.module_help(module)}"
