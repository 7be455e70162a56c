"""`python -m keras_preact.analysis SUBCOMMAND [flags]`: the paper's analyses, by command.

python -m keras_preact.analysis cost --models=ResNet50V2 --layouts=paper,keras
python -m keras_preact.analysis cost --help        # one subcommand's flags
python -m keras_preact.analysis propagation --output_dir=analysis/propagation
python -m keras_preact.analysis table --table=2 --seeds=1,2,3 --root=runs/table2
"""

import sys

from absl import flags

from keras_preact import console
from keras_preact.analysis import cost, propagation, table

# name -> (the subcommand's `main(argv)`, one line of help). The function's module also has
# `define_flags()` and `usage()` (its docstring and flags): a new subcommand is one line here.
SUBCOMMANDS = {
    "cost": (cost.main, "parameters and multiply-adds of every model and layout, with references"),
    "propagation": (propagation.main, "per-unit signal and gradient norms at init vs Eqns. 4-8"),
    "table": (table.main, table.HELP),
}


def _module(main):
    return sys.modules[main.__module__]


def usage():
    """The subcommands, then each one's flags."""
    lines = [__doc__, "Subcommands:"]
    lines += [f"  {name:<14}{text}" for name, (_, text) in SUBCOMMANDS.items()]
    for name, (main, _) in SUBCOMMANDS.items():
        module = _module(main)
        module.define_flags()
        lines += ["", f"Flags of {name}:", flags.FLAGS.module_help(module.__name__)]
    return "\n".join(lines)


def run(argv=None):
    """Runs the subcommand that the first positional argument names; none: prints `usage()`."""
    argv = list(sys.argv if argv is None else argv)
    positional = [i for i, arg in enumerate(argv) if i and not arg.startswith("-")]
    if not positional:
        print(usage())
        sys.exit(0)
    name = argv.pop(positional[0])
    if name not in SUBCOMMANDS:
        print(f"Unknown subcommand {name!r}. Allowed: {', '.join(SUBCOMMANDS)}.", file=sys.stderr)
        sys.exit(1)
    main, _ = SUBCOMMANDS[name]
    module = _module(main)
    module.define_flags()
    sys.argv = argv
    console.run(main, module.usage)


if __name__ == "__main__":
    run()
