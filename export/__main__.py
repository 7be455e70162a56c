"""Command line: export a trained model for TF Serving, TFLite and (optionally) ONNX.

From the repository root:

    python -m export --model_path=runs/cifar/model.keras --output_dir=exported \\
        --model_name=cifar
    python -m export --builder=ResNet50V2 --weights=resnet50v2.weights.h5 \\
        --output_dir=exported --model_name=resnet50v2 --crop_size=320

Writes `<output_dir>/<model_name>/<version>/` (SavedModel),
`<output_dir>/tflite/<model_name>/<version>/` and, with --onnx,
`<output_dir>/onnx/<model_name>/<version>/`, each verified against the Keras
model on real images (reports beside the artifacts). See `export.pipeline`.
"""

import json
import os
import sys

from absl import app, flags, logging

from export import tflite as tflite_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "Trained model: a .keras file.")
flags.DEFINE_string("builder", None, "Or a keras-preact builder name, e.g. ResNet50V2.")
flags.DEFINE_string("weights", None, "Weights file (.weights.h5 / .keras) for --builder.")
flags.DEFINE_string(
    "builder_kwargs", "{}", "JSON of extra builder arguments, e.g. '{\"classes\": 10}'."
)
flags.DEFINE_string("output_dir", None, "Root folder of the exported artifacts.")
flags.DEFINE_string("model_name", "preact", "TF Serving model name (folder under output_dir).")
flags.DEFINE_integer("version", None, "Version number; default: the next free one.")
flags.DEFINE_boolean("overwrite", False, "Replace an existing version (otherwise refuse).")
flags.DEFINE_string(
    "labels", None, "Class names file, one per line (default: labels.txt beside the model)."
)
flags.DEFINE_integer(
    "crop_size", None, "Eval crop: 224 (from 256) or 320 (from 320); default: model's size or 224."
)
flags.DEFINE_integer(
    "resize_size", None, "Shorter side before the crop (default: by crop and the weights' source)."
)
flags.DEFINE_enum(
    "interpolation",
    None,
    ["bilinear", "bicubic"],
    "Resize interpolation of the image-bytes signature (default: the weights source's).",
)
flags.DEFINE_integer("top_k", 5, "Classes/scores/labels returned per image.")
flags.DEFINE_list(
    "tflite", list(tflite_lib.VARIANTS), f"TFLite variants, subset of {tflite_lib.VARIANTS}."
)
flags.DEFINE_boolean("onnx", False, "Also export ONNX (needs tf2onnx and onnxruntime).")
flags.DEFINE_string(
    "images", None, "Folder of real images for verification (default: packaged sample photos)."
)
flags.DEFINE_string(
    "calibration_images", None, "Folder of images for int8 calibration (default: --images)."
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
flags.DEFINE_string(
    "normalization", None, "Only for models built with include_preprocessing=False."
)
flags.DEFINE_boolean("verify", True, "Verify every artifact against the Keras model.")
flags.DEFINE_integer("num_threads", 1, "TFLite interpreter threads for the latency figure.")
flags.DEFINE_string("summary_json", None, "Also write the result (paths, reports) here.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.output_dir is None:
        raise app.UsageError("--output_dir is required.")
    try:
        builder_kwargs = json.loads(FLAGS.builder_kwargs)
    except json.JSONDecodeError as e:
        raise app.UsageError(f"--builder_kwargs is not valid JSON: {e}") from None
    import tensorflow as tf

    if not FLAGS["verbosity"].present:  # TF's INFO lines drown the summary
        logging.set_verbosity(logging.WARNING)
        tf.get_logger().setLevel("ERROR")
    from export import model as model_lib
    from export import pipeline
    from export.verify import VerificationError

    try:
        model = model_lib.load_model(
            FLAGS.model_path,
            builder=FLAGS.builder,
            weights=FLAGS.weights,
            builder_kwargs=builder_kwargs,
        )
        result = pipeline.export_all(
            model,
            FLAGS.output_dir,
            model_name=FLAGS.model_name,
            version=FLAGS.version,
            overwrite=FLAGS.overwrite,
            labels=FLAGS.labels or _labels_beside(FLAGS.model_path),
            crop_size=FLAGS.crop_size,
            resize_size=FLAGS.resize_size,
            interpolation=FLAGS.interpolation,
            top_k=FLAGS.top_k,
            tflite=[v for v in FLAGS.tflite if v],
            onnx=FLAGS.onnx,
            images=FLAGS.images,
            calibration=_calibration(model),
            calibration_limit=FLAGS.calibration_limit,
            normalization=FLAGS.normalization,
            verify=FLAGS.verify,
            num_threads=FLAGS.num_threads,
        )
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        sys.exit(f"export: {e}")
    except VerificationError as e:
        sys.exit(f"export: verification failed: {e}")
    print(result.summary())
    if FLAGS.summary_json:
        from export.verify import write_report

        write_report(FLAGS.summary_json, _jsonable(result))
    base = os.path.abspath(os.path.join(FLAGS.output_dir, FLAGS.model_name))
    print(
        f"\nServe:  docker run --rm -p 8500:8500 -p 8501:8501 "
        f"-v {base}:/models/{FLAGS.model_name} "
        f"-e MODEL_NAME={FLAGS.model_name} tensorflow/serving\n"
        f"Query:  python -m export.serving.client --model_name={FLAGS.model_name} IMAGE.jpg"
    )


def _calibration(model):
    """--calibration_images, or a dataset from the training pipeline (eval crops, no shuffle)."""
    if FLAGS.calibration_dataset is None:
        return FLAGS.calibration_images
    if FLAGS.calibration_images is not None:
        raise ValueError("Give --calibration_images or --calibration_dataset, not both.")
    from keras_preact.data import make_dataset
    from keras_preact.preprocessing import eval_preprocessing

    crop = FLAGS.crop_size or model.inputs[0].shape[1] or 224
    return make_dataset(
        FLAGS.calibration_dataset,
        FLAGS.calibration_split,
        batch_size=32,
        data_dir=FLAGS.calibration_data_dir,
        training=False,
        eval_crop_size=crop,
        eval_preprocessing=eval_preprocessing(model),
    )


def _labels_beside(model_path):
    """labels.txt next to a .keras file, if present (resolve_labels looks there too)."""
    if model_path is None:
        return None
    from export.model import LABELS_FILENAME

    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), LABELS_FILENAME)
    return path if os.path.isfile(path) else None


def _jsonable(result):
    import dataclasses

    data = dataclasses.asdict(result)
    data.pop("labels")
    return data


if __name__ == "__main__":
    app.run(main)
