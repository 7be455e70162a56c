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
then renamed into place; nothing is published when its verification fails,
nor when the disk fills up (`keras_preact.files.DiskFullError`, one line).

`model` may be a training run's directory: its `spec.json`
(`keras_preact.run_dir`) then gives the class names, the serving crop and
resize sizes, the interpolation and the int8 calibration data (the run's
training images), so nothing is restated.

Example:

>>> result = export_all("runs/cifar", "exported", model_name="cifar")  # doctest: +SKIP
>>> result.saved_model_dir, result.tflite["float32"]  # doctest: +SKIP
('exported/cifar/1', 'exported/tflite/cifar/1/float32.tflite')
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import shutil

import tensorflow as tf
from absl import logging

from keras_preact import files, run_dir
from keras_preact.export import model as model_lib
from keras_preact.export import onnx_export
from keras_preact.export import saved_model as saved_model_lib
from keras_preact.export import tflite as tflite_lib
from keras_preact.export import verify as verify_lib
from keras_preact.options import EvalProtocol
from keras_preact.run_dir import write_json

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_RESERVED = ("tflite", "onnx")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """`export_all`'s arguments (documented there), checked when made.

    Built once per call; `version=None` becomes the version chosen for every
    artifact through `dataclasses.replace`, never by assignment.
    """

    model: object
    output_dir: str | os.PathLike
    model_name: str = "preact"
    version: int | None = None
    overwrite: bool = False
    labels: object = None
    crop_size: int | None = None
    resize_size: int | None = None
    interpolation: str | None = None
    top_k: int = 5
    tflite: tuple[str, ...] = tflite_lib.VARIANTS
    onnx: bool = False
    images: object = None
    calibration: object = None
    calibration_limit: int = 100
    normalization: str | None = None
    verify: bool = True
    saved_model_cli: bool = True
    num_threads: int = 1
    saved_model: bool = True
    float32_tolerance: float = tflite_lib.FLOAT32_TOLERANCE
    saved_model_precision: str = "float32"
    frozen_weights: bool = False

    def __post_init__(self):
        """Validates names and formats before anything is loaded or written."""
        if self.saved_model_precision not in saved_model_lib.PRECISIONS:
            raise ValueError(
                f"Unknown saved_model_precision {self.saved_model_precision!r}. Allowed values: "
                f"{saved_model_lib.PRECISIONS}."
            )
        if not _NAME.match(self.model_name) or self.model_name in _RESERVED:
            raise ValueError(
                f"Invalid model_name {self.model_name!r}: use letters, digits, '_', '.', '-' "
                f"(not starting with '.' or '-'), and not {' or '.join(_RESERVED)}."
            )
        for variant in self.tflite:
            if variant not in tflite_lib.VARIANTS:
                raise ValueError(
                    f"Unknown TFLite variant {variant!r}. Allowed values: {tflite_lib.VARIANTS}."
                )
        if self.onnx:
            onnx_export.require()
        if not (self.saved_model or self.tflite or self.onnx):
            raise ValueError("Nothing to export: enable the SavedModel, a TFLite variant or ONNX.")


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
    interpolation: str = EvalProtocol.interpolation
    tflite_dir: str | None = None
    tflite: dict = dataclasses.field(default_factory=dict)
    tflite_reports: dict = dataclasses.field(default_factory=dict)
    onnx_path: str | None = None
    onnx_report: dict | None = None
    checked_on: str = ""  # which images the verification used, in words

    def summary(self):
        """A short table of the artifacts and their figures."""
        rows = [
            f"version {self.version}; labels from {self.labels_source}; image_bytes crop "
            f"{self.crop_size} from shorter side {self.resize_size} ({self.interpolation})"
        ]
        if self.checked_on and (self.saved_model_report or self.tflite_reports or self.onnx_report):
            rows.append(f"checked against the Keras model on {self.checked_on}")
        calibration = self.tflite_reports.get("int8", {}).get("calibration")
        if calibration:
            rows.append(
                f"int8 calibrated on {calibration['images']} images: {calibration['source']}"
            )
        sm = self.saved_model_report
        if sm:
            fresh = sm["fresh_process"]["checks"]["serving_default"]
            precision = sm.get("precision", "float32")
            name = "SavedModel" if precision == "float32" else f"SavedModel ({precision})"
            rows.append(
                f"{name}   {self.saved_model_dir}  max|d|={fresh['max_abs_diff']:.2e} "
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
    saved_model_precision="float32",
    frozen_weights=False,
):
    """Exports a trained classifier; returns an `ExportResult` with paths and reports.

    Args:
        model: a Keras model, a `.keras` file (its folder's `labels.txt`, if
            any, gives the class names) or a training run's directory (its
            `spec.json` gives names, sizes, interpolation and calibration data).
        output_dir: root of the layout above.
        model_name: TF Serving model name (the base path's folder).
        version: integer version; default: the next free one.
        overwrite: replace an existing version (otherwise refuse, leaving it as is).
        labels: class names (a list) or a labels file; default: the run's, else
            see `keras_preact.export.model.resolve_labels`.
        crop_size, resize_size, interpolation: the image-bytes signature's
            eval crop (also the TFLite input size), the shorter side resized to
            before it and the resize interpolation. Default: the run's spec,
            else `keras_preact.export.model.serving_geometry`.
        top_k: classes/scores/labels per image in the SavedModel outputs.
        tflite: TFLite variants to write (subset of `keras_preact.export.tflite.VARIANTS`).
        onnx: also write ONNX (needs tf2onnx and onnxruntime).
        images: real images for verification (folder, files, or `(name, bytes)`
            pairs); default: the sample photos scikit-learn/scikit-image ship.
        calibration: int8 representative data: a folder of images or a
            `tf.data.Dataset` from the training pipeline; default: a run's
            training images (when present), else `images`.
        calibration_limit: at most this many calibration images.
        normalization: only for a model built without its preprocessing layer.
        verify: check each artifact against the Keras model (SavedModel in a
            separate process; TFLite float32 must agree to 1e-4 and on top-1).
        saved_model_cli: also run `saved_model_cli run` in the SavedModel check.
        num_threads: TFLite interpreter threads for the latency figure.
        saved_model: write the SavedModel (False: only TFLite / ONNX).
        float32_tolerance: max |delta| allowed for TFLite float32 (and ONNX).
        saved_model_precision: "float32", or "bfloat16" for CPUs with bfloat16
            instructions (AVX512-BF16, AMX): the SavedModel computes in
            bfloat16, with its weights frozen (verified to
            `verify.BFLOAT16_TOLERANCE`). See `saved_model.build_archive`.
        frozen_weights: the SavedModel's weights as graph constants, not
            variables: half the size; for serving only.
    """
    options = ExportOptions(
        model,
        output_dir,
        model_name=model_name,
        version=version,
        overwrite=overwrite,
        labels=labels,
        crop_size=crop_size,
        resize_size=resize_size,
        interpolation=interpolation,
        top_k=top_k,
        tflite=tuple(tflite or ()),
        onnx=onnx,
        images=images,
        calibration=calibration,
        calibration_limit=calibration_limit,
        normalization=normalization,
        verify=verify,
        saved_model_cli=saved_model_cli,
        num_threads=num_threads,
        saved_model=saved_model,
        float32_tolerance=float32_tolerance,
        saved_model_precision=saved_model_precision,
        frozen_weights=frozen_weights,
    )
    return _export_outside_strategy(options)


def _after_full_disk(published):
    """What a full disk's `DiskFullError` adds: which artifacts were published before it."""
    rest = "(its temporary folders were removed): free space and export again."
    if not published:
        return f"Nothing was published {rest}"
    return f"Published before it filled: {', '.join(published)}. The rest was not {rest}"


def _disk_full_as_error(o, then):
    """`files.disk_full_as_error` for the export of `o`'s model."""
    return files.disk_full_as_error(
        os.path.join(o.output_dir, o.model_name), what=f"the export of {o.model_name}", then=then
    )


@contextlib.contextmanager
def _export_guard(o, published):
    """A full disk in the block raises `DiskFullError` naming what was `published` by then,
    also where a writer already raised one (a verification report, the ONNX file)."""
    with _disk_full_as_error(o, then=lambda: _after_full_disk(published)):
        try:
            yield
        except files.DiskFullError as error:
            message = f"{error} {_after_full_disk(published)}"
            raise files.DiskFullError(message, error.filename) from None


def _export_outside_strategy(o):
    """`_export(o)`, outside the caller's tf.distribute strategy; a full disk before anything
    is written raises `DiskFullError` saying that nothing was published."""
    with _disk_full_as_error(o, then=_after_full_disk(())):
        if tf.distribute.has_strategy():
            # Strategy scopes are per thread: export in a fresh thread, outside the caller's scope.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(_export, o).result()
        return _export(o)


def _export(o):
    """Exports what the options say (in the caller's thread, or in one outside its strategy)."""
    plan = model_lib.prepare(
        o.model,
        labels=o.labels,
        crop_size=o.crop_size,
        resize_size=o.resize_size,
        interpolation=o.interpolation,
        normalization=o.normalization,
    )
    bases = _version_bases(o)
    o = dataclasses.replace(o, version=_free_version(o, bases))
    images = verify_lib.load_images(o.images)
    crops = verify_lib.eval_crops(images, plan.crop_size, plan.resize_size, plan.interpolation)
    reference = None
    if o.verify:
        pixels = verify_lib.normalize(crops, plan.normalization)
        reference = verify_lib.keras_probabilities(plan.model, pixels)
    result = ExportResult(
        version=o.version,
        saved_model_dir=(
            os.path.join(bases["saved_model"], str(o.version)) if o.saved_model else None
        ),
        saved_model_report=None,
        labels=plan.labels,
        labels_source=plan.labels_source,
        crop_size=plan.crop_size,
        resize_size=plan.resize_size,
        interpolation=plan.interpolation,
        checked_on=_describe_images(o.images, images),
    )
    checked = (images, crops, reference)
    published = []  # each artifact's folder, once it is in place
    with _export_guard(o, published):
        if o.saved_model:
            _write_saved_model(o, plan, result, bases["saved_model"], images)
            published.append(result.saved_model_dir)
        if o.tflite:
            _write_tflite(o, plan, result, bases["tflite"], checked)
            published.append(result.tflite_dir)
        if o.onnx:
            _write_onnx(o, plan, result, bases["onnx"], checked)
    return result


def _version_bases(o):
    """`{format: base folder}` of the artifacts asked for; removes killed exports' temporaries."""
    bases = {}
    if o.saved_model:
        bases["saved_model"] = os.path.join(o.output_dir, o.model_name)
    if o.tflite:
        bases["tflite"] = os.path.join(o.output_dir, "tflite", o.model_name)
    if o.onnx:
        bases["onnx"] = os.path.join(o.output_dir, "onnx", o.model_name)
    for base in bases.values():
        removed = saved_model_lib.remove_stale_temporaries(base)
        if removed:
            logging.info("Removed temporaries of killed exports in %s: %s", base, removed)
    return bases


def _free_version(o, bases):
    """The version number: `o.version`, else the next one free in every base (checked in each)."""
    version = o.version
    if version is None:
        version = max(saved_model_lib.next_version(b) for b in bases.values())
    version = int(version)
    for base in bases.values():
        saved_model_lib.resolve_version(base, version, o.overwrite)
    return version


def _write_saved_model(o, plan, result, base, images):
    """Writes, verifies and publishes the SavedModel version (fills `result`)."""
    archive = saved_model_lib.build_archive(
        plan.model,
        plan.labels,
        plan.crop_size,
        plan.resize_size,
        o.top_k,
        plan.normalization,
        plan.pixel_size,
        plan.interpolation,
        frozen_weights=o.frozen_weights,
        precision=o.saved_model_precision,
    )
    bfloat16 = o.saved_model_precision == "bfloat16"
    with _staging(base, result.version) as tmp:
        saved_model_lib.write_saved_model(
            archive,
            tmp,
            plan.labels,
            warmup_images=[data for _, data in images[:1]],
            model_name=o.model_name,
        )
        if o.verify:
            report = verify_lib.verify_saved_model(
                tmp,
                plan.model,
                images,
                plan.labels,
                plan.crop_size,
                plan.resize_size,
                plan.normalization,
                saved_model_cli=o.saved_model_cli,
                interpolation=plan.interpolation,
                tolerance=(
                    verify_lib.BFLOAT16_TOLERANCE if bfloat16 else verify_lib.SAVED_MODEL_TOLERANCE
                ),
            )
            report["precision"] = o.saved_model_precision
            report["frozen_weights"] = o.frozen_weights or bfloat16
            report["artifact"] = os.path.abspath(result.saved_model_dir)
            report["model"] = model_lib.describe(plan.model)
            report["labels_source"] = plan.labels_source
            write_json(os.path.join(tmp, saved_model_lib.REPORT_ASSET), report)
            result.saved_model_report = report
        saved_model_lib.publish_dir(tmp, result.saved_model_dir, o.overwrite)
    logging.info("SavedModel: %s", result.saved_model_dir)


def _write_tflite(o, plan, result, base, checked):
    """Converts, verifies and publishes every TFLite variant of one version (fills `result`)."""
    images, crops, reference = checked
    result.tflite_dir = os.path.join(base, str(result.version))
    representative, calibration_source = None, None
    if "int8" in o.tflite:  # built only when int8 is asked for
        representative, calibration_source = _representative_images(o, plan, images)
    converted = tflite_lib.convert_all(
        plan.model, o.tflite, plan.crop_size, representative, plan.normalization
    )
    with _staging(base, result.version) as tmp:
        with open(os.path.join(tmp, run_dir.LABELS), "w", encoding="utf-8") as f:
            f.write("".join(f"{label}\n" for label in plan.labels))
        for variant, data in converted.items():
            path = os.path.join(tmp, f"{variant}.tflite")
            with open(path, "wb") as f:
                f.write(data)
            result.tflite[variant] = os.path.join(result.tflite_dir, f"{variant}.tflite")
            if not o.verify:
                continue
            report = tflite_lib.verify_tflite(
                path,
                variant,
                reference,
                crops,
                [name for name, _ in images],
                num_threads=o.num_threads,
                tolerance=o.float32_tolerance,
            )
            report["artifact"] = os.path.abspath(result.tflite[variant])
            report["model"] = model_lib.describe(plan.model)
            if variant == "int8":
                report["calibration"] = {
                    "images": int(len(representative)),
                    "source": calibration_source,
                }
            write_json(os.path.join(tmp, f"{variant}.verification.json"), report)
            result.tflite_reports[variant] = report
            if report.get("passed") is False:
                raise verify_lib.VerificationError(
                    f"TFLite {variant} disagrees with the Keras model beyond tolerance "
                    f"(max |delta| {report['checks']['max_abs_diff']:.3g} > "
                    f"{report['tolerance']:g} or top-1 agreement "
                    f"{report['checks']['top1_agreement']:.3f} < 1); nothing was written "
                    f"to {result.tflite_dir}. Report: {report}"
                )
        saved_model_lib.publish_dir(tmp, result.tflite_dir, o.overwrite)
    logging.info("TFLite: %s", result.tflite_dir)


def _representative_images(o, plan, images):
    """int8 calibration crops and where they come from, in words.

    From `o.calibration`, else the run's training images, else the verification images.
    """
    calibration = o.calibration if o.calibration is not None else plan.run_calibration()
    calibration_source = _describe_source(calibration, images)
    if o.calibration is None and calibration is not None:
        calibration_source = f"the run's {plan.spec.dataset} training images"
    representative = tflite_lib.representative_images(
        calibration if calibration is not None else images,
        plan.crop_size,
        plan.resize_size,
        o.calibration_limit,
        plan.interpolation,
    )
    return representative, calibration_source


def _write_onnx(o, plan, result, base, checked):
    """Converts, verifies and publishes the ONNX file of one version (fills `result`)."""
    images, crops, reference = checked
    onnx_dir = os.path.join(base, str(result.version))
    with _staging(base, result.version) as tmp:
        path = onnx_export.export_onnx(
            plan.model, os.path.join(tmp, "model.onnx"), plan.normalization
        )
        result.onnx_path = os.path.join(onnx_dir, "model.onnx")
        if o.verify:
            report = onnx_export.verify_onnx(
                path, reference, crops, [name for name, _ in images], tolerance=o.float32_tolerance
            )
            report["artifact"] = os.path.abspath(result.onnx_path)
            report["model"] = model_lib.describe(plan.model)
            write_json(os.path.join(tmp, "model.verification.json"), report)
            result.onnx_report = report
            if not report["passed"]:
                raise verify_lib.VerificationError(
                    f"ONNX disagrees with the Keras model beyond tolerance: {report}"
                )
        saved_model_lib.publish_dir(tmp, onnx_dir, o.overwrite)


def _describe_images(source, images):
    """Which images verification used, in words (the figures mean little on unrelated images)."""
    if source is None:
        return (
            f"the {len(images)} sample photos packaged with keras-preact (natural scenes: for a "
            "model of other images, pass images like its own with --images / images=)"
        )
    if isinstance(source, (str, os.PathLike)):
        return f"{len(images)} images from {os.fspath(source)}"
    return f"{len(images)} given images"


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
