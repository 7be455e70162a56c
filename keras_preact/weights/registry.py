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


def _timm(model, tag, depth, crop_fraction, accuracy, size_mb):
    full = f"{model}.{tag}"
    return WeightsSource(
        name=f"timm:{full}",
        depth=depth,
        url=_HF.format(full),
        mirror_path=f"timm/{full}/model.safetensors",
        format="safetensors",
        layout="timm",
        normalization="tf",  # mean = std = 0.5 on [0, 1]
        interpolation="bicubic",
        crop_fraction=crop_fraction,
        test_size=288,
        accuracy=accuracy,
        published=(
            f"timm: the Hugging Face model card of timm/{full} and timm's "
            "results-imagenet.csv (ra4 ResNet-18/34: Hugging Face blog 'Trick or ResNet Treat')"
        ),
        license=_TIMM_LICENSE,
        size_mb=size_mb,
        hash_note=_TIMM_NOTE,
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
        "resnetv2_18", "ra4_e3600_r224_in1k", 18, 0.9, {224: (73.57, None), 288: (75.36, None)}, 47
    ),
    _timm(
        "resnetv2_34", "ra4_e3600_r224_in1k", 34, 0.9, {224: (77.63, 93.53), 288: (79.07, None)}, 87
    ),
    _timm("resnetv2_50", "a1h_in1k", 50, 0.95, {224: (80.41, None), 288: (81.41, 95.73)}, 102),
    _timm("resnetv2_101", "a1h_in1k", 101, 0.95, {224: (82.04, None), 288: (83.00, 96.45)}, 178),
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

    >>> [s.name for s in sources(depth=50)]
    ['timm:resnetv2_50.a1h_in1k', 'keras:resnet50v2']
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
