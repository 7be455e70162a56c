"""Groups of settings that travel together, each checked once, where it is made.

* `check_choice`: the one "Unknown X. Allowed values: ..." check of every
  enumerated argument (layers, builders, training config).
* `ShortcutOptions`: a unit's skip connection (the paper's Fig. 2 / Table 1)
  and its per-shortcut settings, with the paper's defaults.
* `EvalProtocol`: how a model's weights are evaluated (resize interpolation,
  crop fraction and the weights source it came from); `resize_size` is the one
  rule that turns an eval crop into the shorter side it is cut from.

Nothing here imports TensorFlow or Keras.

>>> ShortcutOptions("constant_scaling").resolved().shortcut_scale
0.5
>>> EvalProtocol().resize_size(224), EvalProtocol(crop_fraction=0.95).resize_size(224)
(256, 235)
"""

from __future__ import annotations

import dataclasses


def check_choice(name, value, allowed):
    """Raises `ValueError("Unknown {name} ... Allowed values: ...")` unless `value` is in `allowed`.

    >>> check_choice("padding", "same", ("same", "symmetric"))
    >>> check_choice("padding", "valid", ("same", "symmetric"))
    Traceback (most recent call last):
    ...
    ValueError: Unknown padding 'valid'. Allowed values: 'same', 'symmetric'.
    """
    if value not in allowed:
        raise ValueError(
            f"Unknown {name} {value!r}. Allowed values: {', '.join(map(repr, allowed))}."
        )


SHORTCUTS = (
    "identity",
    "constant_scaling",
    "exclusive_gating",
    "shortcut_only_gating",
    "conv1x1",
    "dropout",
)
GATING_SHORTCUTS = ("exclusive_gating", "shortcut_only_gating")
# option -> (the shortcuts it applies to, the paper's value)
SHORTCUT_OPTION_DEFAULTS = {
    "shortcut_scale": (("constant_scaling",), 0.5),
    "residual_scale": (("constant_scaling",), 1.0),
    "gate_bias_init": (GATING_SHORTCUTS, 0.0),
    "shortcut_dropout_rate": (("dropout",), 0.5),
}


@dataclasses.dataclass(frozen=True)
class ShortcutOptions:
    """A unit's skip connection and its settings; `None` is the paper's value for the shortcut.

    An option given for another shortcut is an error (`shortcut_scale` with
    `"identity"`, say). `resolved()` fills the paper's values for this
    shortcut's options; `as_kwargs()` gives the unit and builder arguments.
    """

    shortcut: str = "identity"
    shortcut_scale: float | None = None
    residual_scale: float | None = None
    gate_bias_init: float | None = None
    shortcut_dropout_rate: float | None = None

    def __post_init__(self):
        check_choice("shortcut", self.shortcut, SHORTCUTS)
        for option, (owners, _) in SHORTCUT_OPTION_DEFAULTS.items():
            if getattr(self, option) is not None and self.shortcut not in owners:
                raise ValueError(
                    f"{option} applies only to shortcut={' or '.join(map(repr, owners))}, "
                    f"but shortcut={self.shortcut!r}."
                )
        rate = self.shortcut_dropout_rate
        if rate is not None and not 0.0 <= rate < 1.0:
            raise ValueError(f"shortcut_dropout_rate must be in [0, 1), got {rate}.")

    @classmethod
    def from_object(cls, source):
        """The options read from any object with these attributes (a config, a unit)."""
        return cls(**{f.name: getattr(source, f.name) for f in dataclasses.fields(cls)})

    def resolved(self):
        """The same options with the paper's value for each option of this shortcut."""
        values = {}
        for option, (owners, default) in SHORTCUT_OPTION_DEFAULTS.items():
            value = getattr(self, option)
            if self.shortcut in owners:
                values[option] = float(default if value is None else value)
        return dataclasses.replace(self, **values)

    def as_kwargs(self):
        """`{"shortcut": ..., option: value}` with the options that are set."""
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if v is not None}


INTERPOLATIONS = ("bilinear", "bicubic")
# crop size -> shorter side it is cut from (the paper's two test crops).
EVAL_RESIZE = {224: 256, 320: 320}


def resize_size(crop_size, crop_fraction=None):
    """Shorter side to resize to before a `crop_size` centre crop.

    Without `crop_fraction`, the paper's protocol (224 from 256, 320 from 320,
    other sizes at 224/256). With a weights source's `crop_fraction` (timm's
    `crop_pct`): floor(crop_size / crop_fraction), except at 320, which is the
    paper's whole-shorter-side crop for every source.

    >>> resize_size(224), resize_size(320), resize_size(288)
    (256, 320, 329)
    >>> resize_size(224, 0.95), resize_size(320, 0.95)
    (235, 320)
    """
    crop_size = int(crop_size)
    if crop_fraction is None or crop_size == 320:
        return EVAL_RESIZE.get(crop_size, int(round(crop_size * 256 / 224)))
    if not 0.0 < float(crop_fraction) <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}.")
    return int(crop_size / float(crop_fraction) + 1e-6)


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    """How a model's weights are evaluated: the paper's protocol unless a weights source says.

    Attributes:
        interpolation: resize interpolation before the centre crop.
        crop_fraction: crop size / resize size (None: the paper's 224 from 256,
            320 from 320).
        weights: the weights source the protocol is published with, if any.
        normalization: that source's input normalisation, if any.
        image_size: that source's training (and default evaluation) crop, if any.
    """

    interpolation: str = "bilinear"
    crop_fraction: float | None = None
    weights: str | None = None
    normalization: str | None = None
    image_size: int | None = None

    def __post_init__(self):
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        if self.crop_fraction is not None:
            resize_size(224, self.crop_fraction)  # checks the range

    @classmethod
    def from_dict(cls, value):
        """The protocol a dict states (unknown keys ignored); None gives the paper's."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(value).items() if k in known})

    def resize_size(self, crop_size):
        """The shorter side a `crop_size` centre crop is cut from (`resize_size`)."""
        return resize_size(crop_size, self.crop_fraction)

    def as_dict(self):
        """Every field, as saved in configs and metrics (JSON-able)."""
        return dataclasses.asdict(self)

    def crop_settings(self):
        """`{"interpolation", "crop_fraction"}`: what the data pipelines' eval crops take."""
        return {"interpolation": self.interpolation, "crop_fraction": self.crop_fraction}
