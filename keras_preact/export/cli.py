"""Command line: export a trained model for TF Serving, TFLite and (optionally) ONNX.

Installed: `keras-preact-export`; from a checkout: `python -m export`.

    keras-preact-export --model_dir=runs/cifar --output_dir=exported --model_name=cifar
    keras-preact-export --model_path=model.keras --output_dir=exported
    keras-preact-export --builder=ResNet50V2 --weights=resnet50v2.weights.h5 \\
        --output_dir=exported --model_name=resnet50v2 --crop_size=320

A training run's directory (`--model_dir`) says everything else: class
names, crop and resize sizes, interpolation and the int8 calibration data
(`keras_preact.run_dir`). Writes `<output_dir>/<model_name>/<version>/`
(SavedModel), `<output_dir>/tflite/<model_name>/<version>/` and, with --onnx,
`<output_dir>/onnx/<model_name>/<version>/`, each verified against the Keras
model on real images (reports beside the artifacts). See
`keras_preact.export.pipeline`.
"""

import dataclasses
import json
import os
import sys

from absl import app, flags

from keras_preact import console
from keras_preact.export import model as model_lib
from keras_preact.export import pipeline
from keras_preact.export import saved_model as saved_model_lib
from keras_preact.export import tflite as tflite_lib
from keras_preact.export.verify import VerificationError
from keras_preact.files import DiskFullError
from keras_preact.preprocessing import eval_preprocessing
from keras_preact.run_dir import write_json

FLAGS = flags.FLAGS


def define_flags():
    """Defines the export flags on absl's FLAGS (once)."""
    if "output_dir" in FLAGS:
        return
    _define_source_flags()
    _define_serving_flags()
    _define_artifact_flags()
    _define_calibration_flags()
    _define_check_flags()


def _define_source_flags():
    """What to export and where to: --model_dir / --model_path / --builder, --output_dir."""
    flags.DEFINE_string(
        "model_dir", None, "A training run's directory (reads model.keras and spec.json)."
    )
    flags.DEFINE_string("model_path", None, "Or a .keras file.")
    flags.DEFINE_string("builder", None, "Or a keras-preact builder name, e.g. ResNet50V2.")
    flags.DEFINE_string("weights", None, "Weights file (.weights.h5 / .keras) for --builder.")
    flags.DEFINE_string(
        "builder_kwargs", "{}", "JSON of extra builder arguments, e.g. '{\"classes\": 10}'."
    )
    flags.DEFINE_string("output_dir", None, "Root folder of the exported artifacts.")
    flags.DEFINE_string("model_name", "preact", "TF Serving model name (folder under output_dir).")
    flags.DEFINE_integer("version", None, "Version number; default: the next free one.")
    flags.DEFINE_boolean("overwrite", False, "Replace an existing version (otherwise refuse).")


def _define_serving_flags():
    """The served model's labels, image-bytes crop, resize and interpolation, top-k."""
    flags.DEFINE_string(
        "labels", None, "Class names file, one per line (default: the run's, or labels.txt beside)."
    )
    flags.DEFINE_integer(
        "crop_size",
        None,
        "Eval crop (default: the run's first eval crop, else the model's size, else 224).",
    )
    flags.DEFINE_integer(
        "resize_size", None, "Shorter side before the crop (default: the run's / weights source's)."
    )
    flags.DEFINE_enum(
        "interpolation",
        None,
        ["bilinear", "bicubic"],
        "Resize interpolation of the image-bytes signature (default: the run's / weights').",
    )
    flags.DEFINE_integer("top_k", 5, "Classes/scores/labels returned per image.")
    flags.DEFINE_enum(
        "saved_model_precision",
        "float32",
        list(saved_model_lib.PRECISIONS),
        "bfloat16: the SavedModel computes in bfloat16 (for CPUs with AVX512-BF16 or AMX, "
        "and GPUs), weights frozen; probabilities within about 1e-2 of float32's.",
    )
    flags.DEFINE_boolean(
        "frozen_weights",
        False,
        "The SavedModel's weights as graph constants, not variables: half the size; for "
        "serving only.",
    )


def _define_artifact_flags():
    """Which artifacts besides the SavedModel: TFLite variants, ONNX; verification images."""
    flags.DEFINE_list(
        "tflite", list(tflite_lib.VARIANTS), f"TFLite variants, subset of {tflite_lib.VARIANTS}."
    )
    flags.DEFINE_boolean("onnx", False, "Also export ONNX (needs tf2onnx and onnxruntime).")
    flags.DEFINE_string(
        "images", None, "Folder of real images for verification (default: packaged sample photos)."
    )


def _define_calibration_flags():
    """The int8 calibration data: a folder of images or a keras_preact.data dataset."""
    flags.DEFINE_string(
        "calibration_images",
        None,
        "Folder of images for int8 calibration (default: the run's training data, else --images).",
    )
    flags.DEFINE_string(
        "calibration_dataset",
        None,
        "Or int8 calibration from the training pipeline: a keras_preact.data dataset name "
        "(digits, cifar10, imagenet2012, folder, ...), evaluation crops of --calibration_split.",
    )
    flags.DEFINE_string("calibration_split", "train", "Split for --calibration_dataset.")
    flags.DEFINE_string("calibration_data_dir", None, "data_dir for --calibration_dataset.")
    flags.DEFINE_integer("calibration_limit", 100, "At most this many calibration images.")


def _define_check_flags():
    """Normalisation of models without their own, verification, reporting, logs."""
    flags.DEFINE_string(
        "normalization", None, "Only for models built with include_preprocessing=False."
    )
    flags.DEFINE_boolean("verify", True, "Verify every artifact against the Keras model.")
    flags.DEFINE_integer("num_threads", 1, "TFLite interpreter threads for the latency figure.")
    flags.DEFINE_string("summary_json", None, "Also write the result (paths, reports) here.")
    flags.DEFINE_boolean("verbose", False, "Show TensorFlow's own logs too (-v for short).")


def main(argv):
    """Exports what the flags name; prints the summary and the serving commands."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.output_dir is None:
        raise app.UsageError("--output_dir is required.")
    try:
        builder_kwargs = json.loads(FLAGS.builder_kwargs)
    except json.JSONDecodeError as e:
        raise app.UsageError(f"--builder_kwargs is not valid JSON: {e}") from None
    console.quiet_python_logs()
    if line := console.device_line():
        print(line, file=sys.stderr)
    try:
        source = model_lib.flag_source(FLAGS, builder_kwargs)
        result = pipeline.export_all(
            source,
            FLAGS.output_dir,
            model_name=FLAGS.model_name,
            version=FLAGS.version,
            overwrite=FLAGS.overwrite,
            labels=FLAGS.labels,
            crop_size=FLAGS.crop_size,
            resize_size=FLAGS.resize_size,
            interpolation=FLAGS.interpolation,
            top_k=FLAGS.top_k,
            tflite=[v for v in FLAGS.tflite if v],
            onnx=FLAGS.onnx,
            images=FLAGS.images,
            calibration=_calibration(source),
            calibration_limit=FLAGS.calibration_limit,
            normalization=FLAGS.normalization,
            verify=FLAGS.verify,
            num_threads=FLAGS.num_threads,
            saved_model_precision=FLAGS.saved_model_precision,
            frozen_weights=FLAGS.frozen_weights,
        )
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, DiskFullError) as e:
        sys.exit(f"export: {e}")
    except VerificationError as e:
        sys.exit(f"export: verification failed: {e}")
    print(result.summary())
    if FLAGS.summary_json:
        summary = dataclasses.asdict(result)
        summary.pop("labels")
        try:
            write_json(FLAGS.summary_json, summary)
        except DiskFullError as e:
            sys.exit(f"export: --summary_json: {e}")
    base = os.path.abspath(os.path.join(FLAGS.output_dir, FLAGS.model_name))
    print(
        f"\nServe:  docker run --rm -p 8500:8500 -p 8501:8501 "
        f"-v {base}:/models/{FLAGS.model_name} "
        f"-e MODEL_NAME={FLAGS.model_name} tensorflow/serving\n"
        f"Query:  keras-preact-client --model_name={FLAGS.model_name} IMAGE.jpg"
    )


def _calibration(source):
    """--calibration_images, or a dataset from the training pipeline (eval crops, no shuffle)."""
    if FLAGS.calibration_dataset is None:
        return FLAGS.calibration_images
    if FLAGS.calibration_images is not None:
        raise ValueError("Give --calibration_images or --calibration_dataset, not both.")
    model, spec, _ = model_lib.load_source(source)
    crop, _, _ = model_lib.serving_geometry(model, spec, FLAGS.crop_size)
    return model_lib.calibration_data(
        FLAGS.calibration_dataset,
        crop,
        spec.eval_preprocessing if spec else eval_preprocessing(model),
        split=FLAGS.calibration_split,
        data_dir=FLAGS.calibration_data_dir,
    )


def usage():
    """`--help`: what the command does, then its flags."""
    return f"{__doc__}\nFlags:\n{FLAGS.module_help(__name__)}\n\nTry --helpfull to get a list of all flags."


def run():
    """The `keras-preact-export` console script."""
    define_flags()
    console.run(main, usage)
