"""`weights=` for every builder: None, a source name, a foreign checkpoint, or a Keras file.

`resolve` decides, before the model is built, what the weights are and which
layout they need (a named source's, or the one a foreign file's format maps
onto); `load_weights` fills the built model.
"""

from __future__ import annotations

import dataclasses
import os

from keras_preact.weights import convert, download, native, registry, timm
from keras_preact.weights.arrays import model_depth


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """What `weights=` named: a registered source, a foreign checkpoint file, or a Keras file."""

    weights: str
    kind: str  # "source", "file" or "native"
    layout: str | None  # the layout the weights need (None: the model's own)
    source: registry.WeightsSource | None = None
    format: str | None = None
    norm: str | None = None  # the norm the weights need (None: the layout's)
    width_multiplier: int | None = None  # their width (None: the paper's)

    @property
    def eval_protocol(self):
        """A named source's `EvalProtocol`, else None (the model's own)."""
        return self.source.eval_protocol if self.source else None


def resolve(weights, depth=None, layout=None):
    """Resolves `weights=` of an ImageNet builder of `depth`; checks an explicit `layout`.

    Returns None for `weights=None`.

    >>> resolve("keras:resnet50v2", depth=50).layout
    'keras'
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights must be None, 'imagenet', a source name such as 'timm:resnetv2_50.a1h_in1k' "
            f"(keras_preact.weights.sources()), or a file path; got {weights!r}."
        )
    weights = os.fspath(weights)
    if registry.is_source_name(weights) and not os.path.exists(weights):
        source = registry.get_source(weights, depth=depth)
        resolved = ResolvedWeights(
            weights, "source", source.layout, source, source.format, source.norm, source.width
        )
    elif weights.endswith((".weights.h5", ".keras")):
        resolved = ResolvedWeights(weights, "native", None, format="keras")
    else:
        if not os.path.isfile(weights):
            raise ValueError(
                f"Weights file not found: {weights!r}. weights= takes None, 'imagenet', a source "
                "name (keras_preact.weights.sources()) or a checkpoint file."
            )
        resolved = _resolve_file(weights, depth)
    wanted = getattr(layout, "name", layout)
    if wanted is not None and resolved.layout is not None and wanted != resolved.layout:
        raise ValueError(
            f"weights={weights!r} need layout={resolved.layout!r} (they are "
            f"{'the ' + resolved.source.name if resolved.source else 'a ' + resolved.format} "
            f"checkpoint's architecture), but layout={wanted!r} was given. Leave layout unset "
            f"to follow the weights, or pass layout={resolved.layout!r}."
        )
    return resolved


def _resolve_file(path, depth):
    fmt = convert.detect_format(path)
    if fmt in ("safetensors", "torch"):  # timm's: which of its layouts, norm and width
        facts = timm.describe(path, fmt)
        if depth is not None and facts["depth"] not in (None, depth):
            width = facts["width_multiplier"]
            arguments = f", width_multiplier={width}" if width and width > 1 else ""
            raise ValueError(
                f"{path!r} is a ResNet-{facts['depth']} checkpoint ({facts['layout']} layout, "
                f"{facts['norm']} norm); this model is ResNet-{depth}. Use "
                f"ResNet{facts['depth']}V2(weights={path!r}{arguments})."
            )
        return ResolvedWeights(
            path, "file", facts["layout"], None, fmt, facts["norm"], facts["width_multiplier"]
        )
    return ResolvedWeights(
        path, "native" if fmt == "keras" else "file", convert.FORMATS[fmt], format=fmt
    )


def _load_source(model, source):
    notop = "predictions" not in {layer.name for layer in model.layers}
    notop = notop and source.notop_url is not None
    cached = download.converted_path(source, notop)
    values = download.read_converted(cached) if os.path.isfile(cached) else None
    if values is None:
        path = download.fetch(source, notop)
        values, extra = convert.read(path, model, source.format)
        if extra:
            convert.assign(model, values, source.name, extra=extra)  # raises, listing them
        try:
            download.write_converted(cached, values, source)
        except OSError as error:  # the cache is an optimisation: a full disk does not stop a build
            convert.log(f"{source.name}: the converted weights were not cached ({error}).")
    return convert.assign(model, values, source.name)


def load_weights(model, weights, resolved=None):
    """Loads `weights` into a built keras-preact `model`.

    Args:
        model: the model (its layout must be the one the weights need; the
            builders take care of that when given `weights=` directly).
        weights: `"imagenet"`, a source name (`keras_preact.weights.sources()`),
            a foreign checkpoint (timm `.safetensors`/`.pth`, keras.applications
            `.h5`, fb.resnet.torch `.t7`: the format is read from the content),
            or a `.weights.h5` / `.keras` file saved by Keras.
        resolved: `resolve(...)`'s result, if the caller already has it.

    Foreign weights fill every variable exactly once; with no classifier, or
    one for another number of classes, the backbone is loaded and the
    classifier kept at its initialisation (one log line says so).

    Example:

    >>> import os, tempfile, keras_preact
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "r20.weights.h5")
    >>> keras_preact.ResNet20V2().save_weights(path)
    >>> load_weights(keras_preact.ResNet20V2(), path).name
    'resnet20v2'
    >>> folder.cleanup()
    """
    if resolved is None:
        resolved = resolve(weights, depth=model_depth(model))
    if resolved.kind == "native":
        return native.load_weights(model, resolved.weights)
    if resolved.kind == "source":
        _load_source(model, resolved.source)
    else:
        values, extra = convert.read(resolved.weights, model, resolved.format)
        convert.assign(model, values, resolved.weights, extra=extra)
    return model
