"""The body both recipes share: flags, training, export (if asked), the result line last."""

import os
import sys

from absl import app, flags

from keras_preact.training import flags as training_flags

flags.DEFINE_string(
    "export_dir",
    None,
    "After training, export the model (SavedModel for TF Serving + TFLite, see export/) "
    "under this folder and verify every artifact against the Keras model.",
)


def finish(config, metrics):
    """Exports on the chief when --export_dir is set, then prints the test accuracy (last line)."""
    export_dir = flags.FLAGS.export_dir
    if export_dir and metrics["chief"]:
        from keras_preact.export import export_all

        # The run directory says the rest: labels, crop, interpolation, calibration images.
        result = export_all(config.model_dir, export_dir, model_name=config.dataset)
        print(result.summary())
    print(training_flags.result_line(metrics))


def main(family):
    """Defines `family`'s flags ("cifar" or "imagenet") and runs the recipe under absl."""
    training_flags.define_flags(family)

    def run(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
        if flags.FLAGS.eval_only and flags.FLAGS.export_dir:
            sys.exit("Error: --eval_only trains no model, so --export_dir has nothing to export.")
        config, metrics = training_flags.main(family)
        finish(config, metrics)

    app.run(run)
