"""The recipes' absl flags, generated from `TrainConfig`'s fields, and back.

Every `TrainConfig` field declared with `option(...)` is a flag of the recipes
(`families`) it names: `define_flags(family)` defines them, each under its
--help section (`GROUPS`, absl's module name of the flag), and
`config_from_flags(family)` reads them back into a `TrainConfig`. A new
training option is one field in `keras_preact/training/config.py`.

>>> values = flags.FlagValues()
>>> define_flags("cifar", values)
>>> _ = values(["cifar.py", "--model_dir=runs/t1", "--depth=164", "--learning_rate=0.05"])
>>> config = config_from_flags("cifar", values)
>>> config.depth, config.unit, config.learning_rate, config.batch_size
(164, None, 0.05, 128)
>>> flag_words("batch_size must be a positive integer, got 0.")
'--batch_size must be a positive integer, got 0.'
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing

from absl import flags

from keras_preact.training.config import FAMILIES, ConfigError, Flag, TrainConfig

_KINDS = {bool: "bool", int: "integer", float: "float", str: "string"}


@dataclasses.dataclass
class RecipeFlag:
    """A `TrainConfig` field as one recipe's flag: its name, absl kind and `Flag` metadata."""

    field: dataclasses.Field
    name: str
    kind: str  # "bool", "integer", "float", "string", "enum" or "list" (of ints)
    spec: Flag

    def resolve(self, family, attribute):
        """The metadata `attribute` ("help", "choices") for `family`: per-family, deferred."""
        value = getattr(self.spec, attribute)
        if isinstance(value, dict):
            value = value[family]
        return value() if callable(value) else value

    def default(self, family):
        value = None if self.spec.required else self.spec.defaults.get(family, self.field.default)
        return [str(v) for v in value] if self.kind == "list" else value


@functools.cache
def recipe_flags(family):
    """The `RecipeFlag`s of `family`'s recipe ("cifar" or "imagenet"), in field order."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}. Allowed values: {', '.join(FAMILIES)}.")
    hints = typing.get_type_hints(TrainConfig)
    result = []
    for field in dataclasses.fields(TrainConfig):
        spec = field.metadata.get("flag")
        if spec is not None and family in spec.families:
            kind = _kind(hints[field.name], spec)
            result.append(RecipeFlag(field, spec.name or field.name, kind, spec))
    return tuple(result)


def _kind(hint, spec):
    """The absl flag type (`DEFINE_<kind>`) of a field annotated `hint`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [t for t in typing.get_args(hint) if t is not type(None)]
    if spec.choices is not None:
        return "enum"
    if typing.get_origin(hint) is tuple:
        return "list"
    return _KINDS[hint]


def define_flags(family, flag_values=flags.FLAGS):
    """Defines the flags of `recipes/<family>.py` ("cifar" or "imagenet") on `flag_values`."""
    for flag in recipe_flags(family):
        choices = (flag.resolve(family, "choices"),) if flag.kind == "enum" else ()
        getattr(flags, f"DEFINE_{flag.kind}")(
            flag.name,
            flag.default(family),
            *choices,
            flag.resolve(family, "help"),
            flag_values=flag_values,
            module_name=flag.spec.group,
            required=flag.spec.required,
        )


def config_from_flags(family, values=None):
    """A `TrainConfig` from parsed flags (absl's FLAGS by default); not validated yet."""
    values = flags.FLAGS if values is None else values
    fields, given = {}, []
    for flag in recipe_flags(family):
        value = values[flag.name].value
        if values[flag.name].present:
            given.append(flag.field.name)
        if flag.kind == "list" and value is not None:
            try:
                value = tuple(int(s) for s in value)
            except ValueError:
                raise ConfigError(f"--{flag.name} must be integers, got {value}.") from None
        fields[flag.field.name] = value
    return TrainConfig(family=family, given=tuple(given), **fields)


def flag_names(family=None):
    """`{field: flag}` of `family`'s recipe (of either recipe by default)."""
    families = FAMILIES if family is None else (family,)
    return {flag.field.name: flag.name for f in families for flag in recipe_flags(f)}


# A one-word field name (an English word too: weights, depth, ...) is a flag name
# only where it is used as a name: before "=", a value, "unset", "must", "needs"
# or a comparison, or after "give" / "needs". No field name in a path, a file
# name or a Python call (`ResNet50V2(weights=...)`) is one.
_FOLLOWS_A_NAME = re.compile(
    r"""=| unset\b| must\b| needs\b| ?[<>]|:? (?:['"\d]|-\d|None\b|True\b|False\b)"""
)
_PRECEDES_A_NAME = re.compile(r"(?:\b[Gg]ive|\bneeds) $")


def flag_words(message, family=None):
    """A library error in command-line words: the fields it names become flags.

    A field name with an underscore is always a flag name; a one-word one where
    it is used as a name (`weights=`, `depth 50`, `layout unset`, `width must`).

    >>> flag_words("weights='x' need layout='keras'. Leave layout unset, or use ResNet50V2.")
    "--weights='x' need --layout='keras'. Leave --layout unset, or use --depth=50."
    >>> flag_words("Give epochs or train_steps, not both. ImageNet weights: family 'imagenet'.")
    "Give --epochs or --train_steps, not both. ImageNet weights: family 'imagenet'."

    The data layer's argument names become the recipes' flags too:

    >>> flag_words("Pass data_dir=DIR or download=True, or use name='folder'.")
    'Pass --data_dir=DIR or --download, or use --dataset=folder.'
    """
    names = flag_names(family)

    def to_flag(match):
        name = match.group(0)
        if (
            "_" in name
            or _FOLLOWS_A_NAME.match(match.string, match.end())
            or _PRECEDES_A_NAME.search(match.string, 0, match.start())
        ):
            return f"--{names[name]}"
        return name

    alternatives = "|".join(sorted(names, key=len, reverse=True))
    message = re.sub(
        rf"(?<![\w./'\"<-])(?<!\w\()(?:{alternatives})(?![\w/-]|\.\w)", to_flag, message
    )
    message = re.sub(r"\b([Uu]se) ResNet(\d+)V2\b", r"\1 --depth=\2", message)
    # make_dataset's `name` is the recipes' --dataset; a boolean flag needs no "=True".
    message = re.sub(r"\bname=(['\"])([\w-]+)\1", r"--dataset=\2", message)
    return re.sub(r"(--\w+)=True\b", r"\1", message)
