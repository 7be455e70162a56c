"""Foreign checkpoints into keras-preact models: format detection, dispatch, exact assignment.

Each converter module (`timm`, `keras_applications`, `torch7`) is a plain
function from a local file to `{variable path: array}` for a given model,
named by the model's own variable paths (`"stage1_unit1/conv1/kernel"`).
`assign` then sets every variable of the model exactly once and refuses
missing, extra or mis-shaped tensors with one message that lists them.

>>> detect_format("model.safetensors")  # doctest: +SKIP
'safetensors'
"""

from __future__ import annotations

import struct
import zipfile

import numpy as np

from keras_preact.weights import keras_applications, timm, torch7
from keras_preact.weights.arrays import STEM_KERNELS, adapt_input_kernel, log, stem_adapts

# format -> the layout its checkpoints map onto exactly (None: this package's own files).
FORMATS = {
    "safetensors": "timm",
    "torch": "timm",  # a PyTorch state dict (.pth/.bin) of timm's resnetv2
    "keras_h5": "keras",  # keras.applications' legacy HDF5 weights
    "torch7": "fb",  # fb.resnet.torch's serialised module tree
    "keras": None,  # .weights.h5 / .keras saved by Keras 3 (keras-preact's own)
}
# Variables the builder sets from the weights' normalisation, not from a checkpoint.
BUILDER_SET = ("preprocessing/",)
HEAD = "predictions/"

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def detect_format(path):
    """The checkpoint format of `path`, from its content (not its name).

    Returns a key of `FORMATS`; raises `ValueError` for anything else.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(0, 2)
            size = f.tell()
    except OSError as error:
        raise ValueError(f"Cannot read weights file {path!r}: {error}") from None
    if head.startswith(_HDF5_SIGNATURE):
        import h5py

        with h5py.File(path, "r") as h5:
            group = h5["model_weights"] if "model_weights" in h5 else h5
            return "keras_h5" if "layer_names" in group.attrs else "keras"
    if head.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if "model.weights.h5" in names:
            return "keras"
        if any(name.endswith("data.pkl") for name in names):
            return "torch"
    if len(head) >= 9:
        (header_size,) = struct.unpack("<Q", head[:8])
        if 0 < header_size < size and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":
        return "torch"  # a legacy (pre-1.6) torch.save pickle
    if len(head) >= 4 and struct.unpack("<i", head[:4])[0] in (3, 4):
        return "torch7"  # a Lua table or torch object, binary mode
    raise ValueError(
        f"{path!r} is not a checkpoint keras-preact can read: expected a timm .safetensors or "
        "PyTorch .pth/.bin state dict, a keras.applications .h5, an fb.resnet.torch .t7, or a "
        "Keras .weights.h5/.keras file."
    )


def read(path, model, fmt=None):
    """`({variable path: array}, [unmapped tensor names])` for `model` from a foreign checkpoint."""
    fmt = fmt or detect_format(path)
    if fmt in ("safetensors", "torch"):
        return timm.convert(path, model, fmt)
    if fmt == "keras_h5":
        return keras_applications.convert(path, model)
    if fmt == "torch7":
        return torch7.convert(path, model)
    raise ValueError(f"{path!r} is a Keras file of this package; load it with load_weights.")


def _listing(items, limit=8):
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def _adapt_stem(wanted, values, source):
    """An RGB stem kernel for a model of other input channels: adapted (`adapt_input_kernel`)."""
    for path in STEM_KERNELS:
        if path not in wanted or path not in values:
            continue
        have, want = np.shape(values[path]), tuple(wanted[path].shape)
        if have != want and stem_adapts(want, have):
            values[path] = adapt_input_kernel(values[path], want[2])
            log(
                f"{source}: the RGB stem kernel is adapted to {want[2]} input channels "
                "(timm's adapt_input_conv: summed for 1, repeated and scaled by 3/C for more)."
            )


def assign(model, values, source, *, extra=()):
    """Sets every variable of `model` from `values` exactly once.

    The classifier is skipped (kept at its initialisation, one log line) when
    the model has none (`include_top=False`) or a different number of classes:
    the backbone is what fine-tuning starts from.

    Args:
        model: the keras-preact model to fill.
        values: `{variable path: array}` from a converter.
        source: the checkpoint's name, for messages.
        extra: tensors of the file that no variable takes (source names), to list.

    Raises:
        ValueError: listing every missing, extra and mis-shaped tensor.
    """
    wanted = {
        v.path: v for v in model.weights if not any(v.path.startswith(p) for p in BUILDER_SET)
    }
    values = dict(values)
    file_head = {p: values.pop(p) for p in list(values) if p.startswith(HEAD)}
    model_head = {p for p in wanted if p.startswith(HEAD)}
    head_fits = bool(file_head) and all(
        p in file_head and tuple(wanted[p].shape) == file_head[p].shape for p in model_head
    )
    if model_head and head_fits:
        values.update(file_head)
    elif file_head:
        for path in model_head:
            wanted.pop(path)
        if model_head:
            log(
                f"{source}: loaded the backbone; the {model.get_layer('predictions').units}-class "
                "classifier 'predictions' starts from its initialisation (the checkpoint's has "
                f"{np.shape(file_head.get(HEAD + 'bias', ()))[0]} classes)."
            )
        else:
            log(f"{source}: loaded the backbone; skipped the checkpoint's classifier.")
    _adapt_stem(wanted, values, source)
    missing = set(wanted) - set(values)
    surplus = (set(values) - set(wanted)) | set(extra)
    misshaped = [
        f"{p} (model {tuple(wanted[p].shape)}, file {tuple(np.shape(values[p]))})"
        for p in sorted(set(wanted) & set(values))
        if tuple(wanted[p].shape) != tuple(np.shape(values[p]))
    ]
    if missing or surplus or misshaped:
        problems = []
        if missing:
            problems.append(f"{len(missing)} model variables get nothing: {_listing(missing)}")
        if surplus:
            problems.append(f"{len(surplus)} tensors fit no variable: {_listing(surplus)}")
        if misshaped:
            problems.append(f"{len(misshaped)} have the wrong shape: {_listing(misshaped)}")
        raise ValueError(
            f"{source} does not map onto model {model.name!r}: " + "; ".join(problems) + ". "
            "Build the depth and layout the checkpoint was trained with."
        )
    for path, variable in wanted.items():
        variable.assign(np.asarray(values[path], variable.dtype))
    return sorted(wanted)
