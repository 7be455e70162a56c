"""`export_all`: one trained model -> SavedModel for TF Serving, TFLite files, optional ONNX.

Output layout (one version number for all artifacts of one export):

    <output_dir>/<model_name>/<version>/             SavedModel (TF Serving base path:
                                                     <output_dir>/<model_name>)
        assets.extra/labels.txt                      class names, one per line
        assets.extra/verification.json               the SavedModel's report
        assets.extra/tf_serving_warmup_requests      a request TF Serving replays on load
    <output_dir>/tflite/<model_name>/<version>/
        float32.tflite, float16.tflite, dynamic_int8.tflite, int8.tflite
        <variant>.verification.json, labels.txt
    <output_dir>/onnx/<model_name>/<version>/        (with onnx=True)
        model.onnx, model.verification.json

Each version directory is written under a hidden temporary name, verified,
then renamed into place; nothing is published when its verification fails.

Example:

>>> result = export_all("runs/cifar/model.keras", "exported", model_name="cifar")  # doctest: +SKIP
>>> result.saved_model_dir, result.tflite["float32"]  # doctest: +SKIP
('exported/cifar/1', 'exported/tflite/cifar/1/float32.tflite')
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import shutil

import tensorflow as tf
from absl import logging

from export import model as model_lib
from export import saved_model as saved_model_lib
from export import tflite as tflite_lib
from export import verify as verify_lib
from keras_preact.data.crops import default_resize_size
from keras_preact.preprocessing import eval_preprocessing

DEFAULT_CROP = 224
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_RESERVED = ("tflite", "onnx")


@dataclasses.dataclass
class ExportResult:
    """Paths and verification reports of one `export_all` call."""

    version: int
    saved_model_dir: str | None
    saved_model_report: dict | None
    labels: list
    labels_source: str
    crop_size: int
    resize_size: int
    interpolation: str = "bilinear"
    tflite_dir: str | None = None
    tflite: dict = dataclasses.field(default_factory=dict)
    tflite_reports: dict = dataclasses.field(default_factory=dict)
    onnx_path: str | None = None
    onnx_report: dict | None = None

    def summary(self):
        """A short table of the artifacts and their figures."""
        rows = [
            f"version {self.version}; labels from {self.labels_source}; image_bytes crop "
            f"{self.crop_size} from shorter side {self.resize_size} ({self.interpolation})"
        ]
        sm = self.saved_model_report
        if sm:
            fresh = sm["fresh_process"]["checks"]["serving_default"]
            rows.append(
                f"SavedModel   {self.saved_model_dir}  max|d|={fresh['max_abs_diff']:.2e} "
                f"top1={fresh['top1_agreement']:.3f}  {sm['size_bytes'] / 1e6:.2f} MB  "
                f"batch-1 {sm['latency_batch1']['median_ms']:.1f} ms"
            )
        elif self.saved_model_dir:
            rows.append(f"SavedModel   {self.saved_model_dir}  (not verified)")
        items = [(f"TFLite {v}", self.tflite[v], self.tflite_reports.get(v)) for v in self.tflite]
        if self.onnx_path:
            items.append(("ONNX", self.onnx_path, self.onnx_report))
        for name, path, report in items:
            if report is None:
                rows.append(f"{name:<20} {path}  (not verified)")
                continue
            checks = report["checks"]
            rows.append(
                f"{name:<20} {path}  max|d|={checks['max_abs_diff']:.2e} "
                f"top1={checks['top1_agreement']:.3f}  {report['size_bytes'] / 1e6:.2f} MB  "
                f"batch-1 {report['latency_batch1']['median_ms']:.1f} ms"
            )
        return "\n".join(rows)


def export_all(
    model,
    output_dir,
    *,
    model_name="preact",
    version=None,
    overwrite=False,
    labels=None,
    crop_size=None,
    resize_size=None,
    interpolation=None,
    top_k=5,
    tflite=tflite_lib.VARIANTS,
    onnx=False,
    images=None,
    calibration=None,
    calibration_limit=100,
    normalization=None,
    verify=True,
    saved_model_cli=True,
    num_threads=1,
    saved_model=True,
    float32_tolerance=tflite_lib.FLOAT32_TOLERANCE,
):
    """Exports a trained classifier; returns an `ExportResult` with paths and reports.

    Args:
        model: a Keras model, or the path of a `.keras` file (its folder's
            `labels.txt`, if any, gives the class names).
        output_dir: root of the layout above.
        model_name: TF Serving model name (the base path's folder).
        version: integer version; default: the next free one.
        overwrite: replace an existing version (otherwise refuse, leaving it as is).
        labels: class names (a list) or a labels file; default: see
            `export.model.resolve_labels`.
        crop_size, resize_size: the image-bytes signature's eval crop and the
            TFLite input size. Default: the model's fixed input size (resized
            from the same shorter side) or else 224, resized from the shorter
            side its weights source evaluates at (`eval_preprocessing(model)`:
            256 for the paper, 235 for timm's crop_pct 0.95).
        interpolation: `"bilinear"` or `"bicubic"` resize before the crop;
            default: the model's weights source's (bilinear without one).
        top_k: classes/scores/labels per image in the SavedModel outputs.
        tflite: TFLite variants to write (subset of `export.tflite.VARIANTS`).
        onnx: also write ONNX (needs tf2onnx and onnxruntime).
        images: real images for verification (folder, files, or `(name, bytes)`
            pairs); default: the sample photos scikit-learn/scikit-image ship.
        calibration: int8 representative data: a folder of images or a
            `tf.data.Dataset` from the training pipeline; default: `images`.
        calibration_limit: at most this many calibration images.
        normalization: only for a model built without its preprocessing layer.
        verify: check each artifact against the Keras model (SavedModel in a
            separate process; TFLite float32 must agree to 1e-4 and on top-1).
        saved_model_cli: also run `saved_model_cli run` in the SavedModel check.
        num_threads: TFLite interpreter threads for the latency figure.
        saved_model: write the SavedModel (False: only TFLite / ONNX).
        float32_tolerance: max |delta| allowed for TFLite float32 (and ONNX).
    """
    kwargs = dict(locals())
    if tf.distribute.has_strategy():
        # Strategy scopes are per thread: export in a fresh thread, outside the caller's scope.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(_export_all, **kwargs).result()
    return _export_all(**kwargs)


def _export_all(
    model,
    output_dir,
    model_name,
    version,
    overwrite,
    labels,
    crop_size,
    resize_size,
    interpolation,
    top_k,
    tflite,
    onnx,
    images,
    calibration,
    calibration_limit,
    normalization,
    verify,
    saved_model_cli,
    num_threads,
    saved_model,
    float32_tolerance,
):
    if not _NAME.match(model_name) or model_name in _RESERVED:
        raise ValueError(
            f"Invalid model_name {model_name!r}: use letters, digits, '_', '.', '-' "
            f"(not starting with '.' or '-'), and not {' or '.join(_RESERVED)}."
        )
    tflite = list(tflite or [])
    for variant in tflite:
        if variant not in tflite_lib.VARIANTS:
            raise ValueError(
                f"Unknown TFLite variant {variant!r}. Allowed values: {tflite_lib.VARIANTS}."
            )
    if onnx:
        from export import onnx_export

        onnx_export.require()

    model_path = None
    if isinstance(model, (str, os.PathLike)):
        model_path = os.fspath(model)
        model = model_lib.load_model(model_path)
    classes = model_lib.num_classes(model)
    if normalization is None and not model_lib.has_preprocessing(model):
        raise ValueError(
            f"Model {model.name!r} has no 'preprocessing' layer, so it expects normalised "
            "input: pass the normalization it was trained with (e.g. normalization='torch')."
        )
    if model_lib.has_preprocessing(model):
        normalization = None
    if isinstance(labels, (str, os.PathLike)):
        labels, labels_source = model_lib.resolve_labels(classes, labels_file=os.fspath(labels))
    elif labels is not None:
        labels, labels_source = [str(x) for x in labels], "given"
        if len(labels) != classes:
            raise ValueError(f"{len(labels)} labels given for a model with {classes} classes.")
    else:
        labels, labels_source = model_lib.resolve_labels(classes, model_path=model_path)

    fixed = model_lib.image_size(model)
    if crop_size is None:
        if fixed is not None and fixed[0] == fixed[1]:
            crop_size, resize_size = fixed[0], resize_size or fixed[0]
        else:
            crop_size = DEFAULT_CROP
    crop_size = int(crop_size)
    protocol = eval_preprocessing(model)  # a pretrained source's, saved with the model
    interpolation = interpolation or protocol["interpolation"]
    resize_size = int(resize_size or default_resize_size(crop_size, protocol["crop_fraction"]))
    copy = model_lib.float32_copy(model)
    pixel_size = model_lib.image_size(copy)
    if pixel_size is not None and pixel_size != (crop_size, crop_size):
        raise ValueError(
            f"The model takes {pixel_size[0]}x{pixel_size[1]} inputs only; crop_size "
            f"{crop_size} does not fit. Use crop_size={pixel_size[0]}."
        )

    bases = {}
    if saved_model:
        bases["saved_model"] = os.path.join(output_dir, model_name)
    if tflite:
        bases["tflite"] = os.path.join(output_dir, "tflite", model_name)
    if onnx:
        bases["onnx"] = os.path.join(output_dir, "onnx", model_name)
    if not bases:
        raise ValueError("Nothing to export: enable the SavedModel, a TFLite variant or ONNX.")
    for base in bases.values():
        removed = saved_model_lib.remove_stale_temporaries(base)
        if removed:
            logging.info("Removed temporaries of killed exports in %s: %s", base, removed)
    if version is None:
        version = max(saved_model_lib.next_version(b) for b in bases.values())
    for base in bases.values():
        saved_model_lib.resolve_version(base, version, overwrite)

    images = verify_lib.load_images(images)
    names = [name for name, _ in images]
    crops = verify_lib.eval_crops(images, crop_size, resize_size, interpolation)
    reference = None
    if verify:
        model_input = crops if normalization is None else verify_lib.normalize(crops, normalization)
        reference = verify_lib.keras_probabilities(copy, model_input)

    result = ExportResult(
        version=int(version),
        saved_model_dir=os.path.join(bases["saved_model"], str(version)) if saved_model else None,
        saved_model_report=None,
        labels=labels,
        labels_source=labels_source,
        crop_size=crop_size,
        resize_size=resize_size,
        interpolation=interpolation,
    )

    if saved_model:
        _write_saved_model(
            result,
            model_name,
            copy,
            bases["saved_model"],
            images,
            top_k,
            normalization,
            pixel_size,
            verify,
            saved_model_cli,
            overwrite,
        )

    if tflite:
        result.tflite_dir = os.path.join(bases["tflite"], str(version))
        representative, calibration_source = None, None
        if "int8" in tflite:
            calibration_source = _describe_source(calibration, images)
            representative = tflite_lib.representative_images(
                calibration if calibration is not None else images,
                crop_size,
                resize_size,
                calibration_limit,
                interpolation,
            )
        converted = tflite_lib.convert_all(copy, tflite, crop_size, representative, normalization)
        with _staging(bases["tflite"], version) as tmp:
            with open(os.path.join(tmp, "labels.txt"), "w", encoding="utf-8") as f:
                f.write("".join(f"{label}\n" for label in labels))
            for variant, data in converted.items():
                path = os.path.join(tmp, f"{variant}.tflite")
                with open(path, "wb") as f:
                    f.write(data)
                final = os.path.join(result.tflite_dir, f"{variant}.tflite")
                result.tflite[variant] = final
                if not verify:
                    continue
                report = tflite_lib.verify_tflite(
                    path,
                    variant,
                    reference,
                    crops,
                    names,
                    num_threads=num_threads,
                    tolerance=float32_tolerance,
                )
                report["artifact"] = os.path.abspath(final)
                report["model"] = model_lib.describe(copy)
                if variant == "int8":
                    report["calibration"] = {
                        "images": int(len(representative)),
                        "source": calibration_source,
                    }
                verify_lib.write_report(os.path.join(tmp, f"{variant}.verification.json"), report)
                result.tflite_reports[variant] = report
                if report.get("passed") is False:
                    raise verify_lib.VerificationError(
                        f"TFLite {variant} disagrees with the Keras model beyond tolerance "
                        f"(max |delta| {report['checks']['max_abs_diff']:.3g} > "
                        f"{report['tolerance']:g} or top-1 agreement "
                        f"{report['checks']['top1_agreement']:.3f} < 1); nothing was written "
                        f"to {result.tflite_dir}. Report: {report}"
                    )
            saved_model_lib.publish_dir(tmp, result.tflite_dir, overwrite)
        logging.info("TFLite: %s", result.tflite_dir)

    if onnx:
        from export import onnx_export

        onnx_dir = os.path.join(bases["onnx"], str(version))
        with _staging(bases["onnx"], version) as tmp:
            path = onnx_export.export_onnx(copy, os.path.join(tmp, "model.onnx"), normalization)
            result.onnx_path = os.path.join(onnx_dir, "model.onnx")
            if verify:
                report = onnx_export.verify_onnx(
                    path, reference, crops, names, tolerance=float32_tolerance
                )
                report["artifact"] = os.path.abspath(result.onnx_path)
                report["model"] = model_lib.describe(copy)
                verify_lib.write_report(os.path.join(tmp, "model.verification.json"), report)
                result.onnx_report = report
                if not report["passed"]:
                    raise verify_lib.VerificationError(
                        f"ONNX disagrees with the Keras model beyond tolerance: {report}"
                    )
            saved_model_lib.publish_dir(tmp, onnx_dir, overwrite)
    return result


def _write_saved_model(
    result,
    model_name,
    copy,
    base,
    images,
    top_k,
    normalization,
    pixel_size,
    verify,
    saved_model_cli,
    overwrite,
):
    """Writes, verifies and publishes the SavedModel version (fills `result`)."""
    labels, crop_size, resize_size = result.labels, result.crop_size, result.resize_size
    archive = saved_model_lib.build_archive(
        copy, labels, crop_size, resize_size, top_k, normalization, pixel_size, result.interpolation
    )
    with _staging(base, result.version) as tmp:
        saved_model_lib.write_saved_model(
            archive,
            tmp,
            labels,
            warmup_images=[data for _, data in images[:1]],
            model_name=model_name,
        )
        if verify:
            report = verify_lib.verify_saved_model(
                tmp,
                copy,
                images,
                labels,
                crop_size,
                resize_size,
                normalization,
                saved_model_cli=saved_model_cli,
                interpolation=result.interpolation,
            )
            report["artifact"] = os.path.abspath(result.saved_model_dir)
            report["model"] = model_lib.describe(copy)
            report["labels_source"] = result.labels_source
            verify_lib.write_report(os.path.join(tmp, saved_model_lib.REPORT_ASSET), report)
            result.saved_model_report = report
        saved_model_lib.publish_dir(tmp, result.saved_model_dir, overwrite)
    logging.info("SavedModel: %s", result.saved_model_dir)


def _describe_source(calibration, images):
    if calibration is None:
        return f"the {len(images)} verification images"
    if isinstance(calibration, tf.data.Dataset):
        return "tf.data.Dataset (training pipeline)"
    if isinstance(calibration, (str, os.PathLike)):
        return f"folder {os.fspath(calibration)}"
    return type(calibration).__name__


class _staging:
    """A temporary version directory, removed again if the block fails before publishing."""

    def __init__(self, base, version):
        self.base, self.version = base, version

    def __enter__(self):
        self.path = saved_model_lib.temporary_dir(self.base, self.version)
        return self.path

    def __exit__(self, *exc):
        if os.path.exists(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
        return False
