"""The paper's analyses, reproducible by command: `python -m keras_preact.analysis SUBCOMMAND`.

Subcommands (`__main__.SUBCOMMANDS`; `--help` lists them and their flags):

* `cost` (`cost.py`): trainable and total parameters and multiply-adds of every
  named model and layout, counted from the built and traced graphs, beside the
  figures of `SPEC.md` §2 and the paper.
* `propagation` (`propagation.py`): per-unit forward norms and loss-gradient
  norms at initialisation, default and with every residual branch zeroed, for
  each shortcut of Table 1 and unit of Table 2, beside Eqns. 4-8's prediction.
* `table` (`table.py`): one training run per row x seed of the paper's Tables
  1, 2 and its CIFAR ResNet-1001 / CIFAR-100 results, resumable, collected
  into a table beside the paper's numbers and one plot of all training curves.
"""

from keras_preact.requirements import require_tensorflow

require_tensorflow("keras_preact.analysis")
