"""The public pre-activation ImageNet checkpoints keras-preact converts, with what each needs.

Every source says where its file is, how to check it, how to read it, which
layout it maps onto exactly, and how it was evaluated when its accuracy was
published (normalisation, resize interpolation, crop fraction, sizes), so the
model, the eval pipeline and the export use the same preprocessing without
the user restating it. The facts are read from each source's code (timm's
`resnetv2.py` default configs, keras.applications' `resnet_v2.py`,
fb.resnet.torch's README and `preresnet.lua`).

>>> source = get_source("imagenet", depth=50)
>>> source.name, source.layout, source.crop_fraction
('timm:resnetv2_50.a1h_in1k', 'timm', 0.95)
>>> [s.name for s in sources()][-1]
'fb:resnet-200'
"""

from __future__ import annotations

import dataclasses
import difflib

from keras_preact.options import EvalProtocol
from keras_preact.weights import convert


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """One public checkpoint and everything needed to load and evaluate it.

    Attributes:
        name: `"<publisher>:<name>"`, what users pass as `weights=`.
        depth: the ImageNet depth it is (18 ... 200).
        url: the file as the publisher's code builds its URL.
        mirror_path: the file's place under `KERAS_PREACT_WEIGHTS_MIRROR`
            (`<mirror>/<mirror_path>`).
        file_hash, hash_algorithm: the hash the publisher pins, or None.
        hash_note: where the hash comes from, or why there is none.
        format: `"safetensors"`, `"keras_h5"` or `"torch7"` (see `convert`).
        layout: the keras-preact layout it maps onto exactly.
        classes: number of classes of its classifier (ImageNet: the 1,000
            classes of tfds `imagenet2012`, `keras_preact.imagenet_classes()`).
        normalization: key of `keras_preact.preprocessing.NORMALIZATIONS`.
        interpolation: resize interpolation of its evaluation (`tf.image.resize`).
        crop_fraction: crop size / resize size of its evaluation at `image_size`
            (`keras_preact.options.resize_size` turns it into a
            resize size; the paper's 320 crop keeps the whole shorter side).
        image_size: its training (and default evaluation) crop size.
        test_size: the larger size its publisher also evaluates at, if any.
        accuracy: `{crop size: (top-1 %, top-5 % or None)}` as published.
        published: where those figures are published.
        license: the weights' licence as the publisher states it.
        size_mb: download size in MB (float32 parameters, as stored).
        notop_url, notop_hash, notop_mirror_path: a smaller file without the
            classifier, used for `include_top=False` (keras.applications).
        norm: the norm its units use (None: its layout's).
        width: its width multiplier (BiT's x1 ... x4).
    """

    name: str
    depth: int
    url: str
    mirror_path: str
    format: str
    layout: str
    normalization: str
    interpolation: str
    crop_fraction: float
    accuracy: dict
    published: str
    license: str
    size_mb: int
    file_hash: str | None = None
    hash_algorithm: str = "sha256"
    hash_note: str = ""
    classes: int = 1000
    image_size: int = 224
    test_size: int | None = None
    notop_url: str | None = None
    notop_hash: str | None = None
    notop_mirror_path: str | None = None
    norm: str | None = None
    width: int = 1

    @property
    def publisher(self):
        return self.name.split(":", 1)[0]

    @property
    def eval_protocol(self):
        """How its published accuracy was measured (resize interpolation, crop fraction, size)."""
        return EvalProtocol(
            interpolation=self.interpolation,
            crop_fraction=self.crop_fraction,
            weights=self.name,
            normalization=self.normalization,
            image_size=self.image_size,
        )


_HF = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/{}"
_TIMM_NOTE = "none: timm's code pins no hash for Hugging Face files"
_TIMM_LICENSE = "Apache-2.0 (timm)"
_KERAS_LICENSE = "Apache-2.0 (keras.applications)"


def _timm(model, tag, depth, crop_fraction, accuracy, size_mb, **facts):
    """A timm checkpoint on the Hugging Face hub; `facts` override the resnetv2 defaults
    (layout, norm, width, classes, image_size, test_size, interpolation)."""
    full = f"{model}.{tag}"
    facts = {"layout": "timm", "interpolation": "bicubic", "test_size": 288, **facts}
    return WeightsSource(
        name=f"timm:{full}",
        depth=depth,
        url=_HF.format(full),
        mirror_path=f"timm/{full}/model.safetensors",
        format="safetensors",
        normalization="tf",  # mean = std = 0.5 on [0, 1]
        crop_fraction=crop_fraction,
        accuracy=accuracy,
        published=(
            f"timm: the Hugging Face model card of timm/{full} and timm's "
            "results-imagenet.csv (ra4 ResNet-18/34: Hugging Face blog 'Trick or ResNet Treat')"
        ),
        license=_TIMM_LICENSE,
        size_mb=size_mb,
        hash_note=_TIMM_NOTE,
        **facts,
    )


def _bit(depth, width, tag, accuracy, size_mb, image_size=448, crop_fraction=1.0, **facts):
    """A BiT checkpoint (Kolesnikov et al. 2020) as timm publishes it: `resnetv2_{depth}x{width}_bit`.

    `goog_in21k` has the 21,843-class ImageNet-21k classifier (no ImageNet-1k
    figure: `accuracy` is empty); the `_ft_in1k` fine-tunes are evaluated at
    448 (480 for 152x4) on the whole image, bilinear.
    """
    facts = {"interpolation": "bilinear", "test_size": None, "layout": "bit", **facts}
    return _timm(
        f"resnetv2_{depth}x{width}_bit",
        tag,
        depth,
        crop_fraction,
        accuracy,
        size_mb,
        width=width,
        image_size=image_size,
        **facts,
    )


def _bit_family(depth, width, accuracy_ft, params_in21k, params_in1k, ft_size=448):
    """A BiT model's two tags: `goog_in21k` (224, crop 0.875) and `goog_in21k_ft_in1k`."""
    return (
        _bit(depth, width, "goog_in21k", {}, round(params_in21k * 4), 224, 0.875, classes=21843),
        _bit(
            depth,
            width,
            "goog_in21k_ft_in1k",
            {ft_size: accuracy_ft},
            round(params_in1k * 4),
            ft_size,
        ),
    )


def _keras(model, depth, md5, notop_md5, accuracy, size_mb):
    top = f"{model}_weights_tf_dim_ordering_tf_kernels.h5"
    notop = f"{model}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return WeightsSource(
        name=f"keras:{model}",
        depth=depth,
        url=_KERAS.format(top),
        mirror_path=f"keras/{top}",
        format="keras_h5",
        layout="keras",
        normalization="tf",  # [-1, 1]
        interpolation="bilinear",
        crop_fraction=0.875,
        accuracy=accuracy,
        published="keras.io/api/applications (model table)",
        license=_KERAS_LICENSE,
        size_mb=size_mb,
        file_hash=md5,
        hash_algorithm="md5",
        hash_note="MD5 pinned in keras.applications' resnet_v2.py (WEIGHTS_HASHES)",
        notop_url=_KERAS.format(notop),
        notop_hash=notop_md5,
        notop_mirror_path=f"keras/{notop}",
    )


_SOURCES = {}


def register_source(source):
    """Adds a `WeightsSource` (e.g. an in-house checkpoint) so `weights=source.name` finds it.

    Returns the source. A name that is already registered is replaced.
    """
    if ":" not in source.name:
        raise ValueError(f"A source name is '<publisher>:<name>', got {source.name!r}.")
    if source.format not in convert.FORMATS:
        raise ValueError(
            f"Unknown format {source.format!r} for {source.name!r}. Allowed values: "
            f"{', '.join(map(repr, convert.FORMATS))}."
        )
    _SOURCES[source.name] = source
    return source


def unregister_source(name):
    """Removes a source added with `register_source` (no error if absent)."""
    _SOURCES.pop(name, None)


for _source in (
    _timm(
        "resnetv2_18",
        "ra4_e3600_r224_in1k",
        18,
        0.9,
        {224: (73.572, 91.356), 288: (75.364, 92.692)},
        47,
    ),
    _timm(
        "resnetv2_34",
        "ra4_e3600_r224_in1k",
        34,
        0.9,
        {224: (77.626, 93.518), 288: (79.070, 94.560)},
        87,
    ),
    _timm("resnetv2_50", "a1h_in1k", 50, 0.95, {224: (80.410, 95.082), 288: (81.406, 95.712)}, 102),
    _timm(
        "resnetv2_101", "a1h_in1k", 101, 0.95, {224: (82.042, 95.866), 288: (83.002, 96.444)}, 178
    ),
    # timm's 'd' nets: deep stem, average-pool projections; BatchNorm, GroupNorm, EvoNorm-S0.
    _timm(
        "resnetv2_18d",
        "ra4_e3600_r224_in1k",
        18,
        0.9,
        {224: (74.422, 91.928), 288: (76.058, 93.010)},
        47,
        layout="timm_d",
        norm="batch",
    ),
    _timm(
        "resnetv2_34d",
        "ra4_e3600_r224_in1k",
        34,
        0.9,
        {224: (78.270, 93.950), 288: (79.614, 94.760)},
        87,
        layout="timm_d",
        norm="batch",
    ),
    _timm(
        "resnetv2_34d",
        "ra4_e3600_r384_in1k",
        34,
        1.0,
        {384: (79.792, 94.902), 448: (80.430, 95.282)},
        87,
        layout="timm_d",
        norm="batch",
        image_size=384,
        test_size=448,
    ),
    _timm(
        "resnetv2_50d_gn",
        "ah_in1k",
        50,
        0.95,
        {224: (80.800, 95.356), 288: (81.960, 95.932)},
        102,
        layout="timm_d",
        norm="group",
    ),
    _timm(
        "resnetv2_50d_evos",
        "ah_in1k",
        50,
        0.95,
        {224: (80.828, 95.270), 288: (82.024, 95.916)},
        102,
        layout="timm_d",
        norm="evonorm_s0",
    ),
    # BiT (Big Transfer): ImageNet-21k pre-training, and its ImageNet-1k fine-tunes.
    *_bit_family(50, 1, (80.386, 95.694), 68.26, 25.55),
    *_bit_family(50, 3, (83.982, 97.130), 345.40, 217.32),
    *_bit_family(101, 1, (82.332, 96.524), 87.25, 44.54),
    *_bit_family(101, 3, (84.430, 97.380), 516.02, 387.93),
    *_bit_family(152, 2, (84.468, 97.432), 321.73, 236.34),
    *_bit_family(152, 4, (84.936, 97.456), 1107.30, 936.53, ft_size=480),
    _bit(
        50,
        1,
        "goog_distilled_in1k",
        {224: (82.820, 96.526)},
        102,
        224,
        0.875,
        interpolation="bicubic",
    ),
    _bit(
        152,
        2,
        "goog_teacher_in21k_ft_in1k",
        {224: (82.918, 96.568)},
        945,
        224,
        0.875,
        interpolation="bicubic",
    ),
    _bit(
        152,
        2,
        "goog_teacher_in21k_ft_in1k_384",
        {384: (83.858, 97.130)},
        945,
        384,
        1.0,
        interpolation="bicubic",
    ),
    _keras(
        "resnet50v2",
        50,
        "3ef43a0b657b3be2300d5770ece849e0",
        "fac2f116257151a9d068a22e544a4917",
        {224: (76.0, 93.0)},
        98,
    ),
    _keras(
        "resnet101v2",
        101,
        "6343647c601c52e1368623803854d971",
        "c0ed64b8031c3730f411d2eb4eea35b5",
        {224: (77.2, 93.8)},
        171,
    ),
    _keras(
        "resnet152v2",
        152,
        "a49b44d1979771252814e80f8ec446f9",
        "ed17cf2e0169df9d443503ef94b23b33",
        {224: (78.0, 94.2)},
        232,
    ),
    WeightsSource(
        name="fb:resnet-200",
        depth=200,
        url="https://d2j0dndfm35trm.cloudfront.net/resnet-200.t7",
        mirror_path="fb/resnet-200.t7",
        format="torch7",
        layout="fb",
        normalization="torch",  # [0, 1] then ImageNet mean/std
        interpolation="bilinear",
        crop_fraction=0.875,  # resize 256, centre crop 224
        test_size=320,
        accuracy={224: (78.34, 94.21), 320: (79.9, 95.2)},
        published=(
            "fb.resnet.torch README (21.66% / 5.79% top-1 / top-5 error at 224; "
            "20.1% / 4.8% on a 320 crop)"
        ),
        license="BSD (fb.resnet.torch)",
        size_mb=259,
        hash_note="none: fb.resnet.torch publishes no hash",
    ),
):
    register_source(_source)

# What weights="imagenet" means for each depth (the best public checkpoint that maps exactly).
DEFAULT_SOURCES = {
    18: "timm:resnetv2_18.ra4_e3600_r224_in1k",
    34: "timm:resnetv2_34.ra4_e3600_r224_in1k",
    50: "timm:resnetv2_50.a1h_in1k",
    101: "timm:resnetv2_101.a1h_in1k",
    152: "keras:resnet152v2",
    200: "fb:resnet-200",
}


def sources(depth=None):
    """The registered weight sources (optionally for one depth), defaults first.

    >>> [s.name for s in sources(depth=50)][:3]
    ['timm:resnetv2_50.a1h_in1k', 'timm:resnetv2_50d_gn.ah_in1k', 'timm:resnetv2_50d_evos.ah_in1k']
    >>> len(sources(depth=50)), len(sources())  # every public pre-activation checkpoint
    (9, 28)
    """
    found = [s for s in _SOURCES.values() if depth is None or s.depth == depth]
    defaults = set(DEFAULT_SOURCES.values())
    return sorted(found, key=lambda s: (s.depth, s.name not in defaults))


def is_source_name(weights):
    """True for `"imagenet"` and `"<publisher>:<name>"` strings (not file paths)."""
    if not isinstance(weights, str):
        return False
    if weights == "imagenet":
        return True
    publisher, sep, _ = weights.partition(":")
    return bool(sep) and publisher.isidentifier() and len(publisher) > 1


def get_source(name, depth=None):
    """The `WeightsSource` named `name` (`"imagenet"` needs `depth`), with a clear error.

    >>> get_source("keras:resnet50v2").hash_algorithm
    'md5'
    """
    if name == "imagenet":
        if depth not in DEFAULT_SOURCES:
            raise ValueError(
                f"weights='imagenet' has no checkpoint for depth {depth!r}: ImageNet weights "
                f"exist for depths {', '.join(map(str, DEFAULT_SOURCES))}. Pass it to a "
                "builder (keras_preact.ResNet50V2(weights='imagenet')) or name a source "
                "(keras_preact.weights.sources())."
            )
        name = DEFAULT_SOURCES[depth]
    if name not in _SOURCES:
        close = difflib.get_close_matches(name, list(_SOURCES), n=3, cutoff=0.6)
        if close:
            raise ValueError(
                f"Unknown weights source {name!r}. Did you mean "
                f"{' or '.join(map(repr, close))}? (keras_preact.weights.sources() lists all.)"
            )
        known = ", ".join(repr(s.name) for s in sources(depth)) or "none"
        raise ValueError(
            f"Unknown weights source {name!r}. Sources"
            + (f" for depth {depth}" if depth else "")
            + f": {known}; or 'imagenet', or a path to a checkpoint file."
        )
    source = _SOURCES[name]
    if depth is not None and source.depth != depth:
        alternatives = ", ".join(repr(s.name) for s in sources(depth)) or "none"
        raise ValueError(
            f"weights={name!r} are ResNet-{source.depth} weights; this model is ResNet-{depth}. "
            f"Use ResNet{source.depth}V2, or one of this depth's sources: {alternatives}."
        )
    return source


def _protocol_words(source):
    words = {"tf": "[−1, 1]", "torch": "ImageNet mean/std"}
    normalisation = words.get(source.normalization, str(source.normalization))
    size = f", {source.image_size}" if source.image_size != 224 else ""
    return f"{normalisation}, {source.interpolation}, crop {source.crop_fraction}{size}"


def _accuracy_words(source):
    if not source.accuracy:
        return f"none: an ImageNet-21k classifier ({source.classes} classes)"
    return ", ".join(f"{top1:g} at {size}" for size, (top1, _) in sorted(source.accuracy.items()))


def sources_table():
    """The README's table of every source: builder and arguments, layout, published top-1,
    evaluation preprocessing, download size and licence (tests check the README holds it)."""
    rows = [
        "| builder | `weights=` | layout, norm, width | published top-1 (%) "
        "| eval preprocessing | download | licence |",
        "|---|---|---|---|---|---|---|",
    ]
    defaults = set(DEFAULT_SOURCES.values())
    for source in sources():
        mark = ' (`"imagenet"`)' if source.name in defaults else ""
        body = ", ".join(
            [f"`{source.layout}`"]
            + ([f"`{source.norm}`"] if source.norm else [])
            + ([f"x{source.width}"] if source.width != 1 else [])
        )
        rows.append(
            f"| ResNet{source.depth}V2 | `{source.name}`{mark} | {body} "
            f"| {_accuracy_words(source)} | {_protocol_words(source)} "
            f"| {source.size_mb:,} MB | {source.license} |"
        )
    return "\n".join(rows) + "\n"
