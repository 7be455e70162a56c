"""The recipes' flags are TrainConfig's fields: one declaration, both ways, --help and errors."""

import dataclasses
import os
import subprocess
import sys

import pytest
from absl import flags

from keras_preact.training import TrainConfig
from keras_preact.training import flags as training_flags
from keras_preact.training.config import FAMILIES, GROUPS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _defined(family):
    values = flags.FlagValues()
    training_flags.define_flags(family, values)
    return values


def _recipe(family, *args):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    script = os.path.join(REPO, "recipes", f"{family}.py")
    return subprocess.run(
        [sys.executable, script, *args], env=env, capture_output=True, text=True, cwd=REPO
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_every_field_is_a_flag_of_its_recipes_or_marked_internal(family):
    by_group = _defined(family).flags_by_module_dict()
    assert set(by_group) <= set(GROUPS)
    defined = {flag.name: group for group, group_flags in by_group.items() for flag in group_flags}
    expected = {}
    for field in dataclasses.fields(TrainConfig):
        assert "flag" in field.metadata, f"{field.name}: declare it with option(...) or INTERNAL"
        spec = field.metadata["flag"]
        if spec is not None and family in spec.families:
            expected[spec.name or field.name] = spec.group
    assert defined == expected


def _other_value(flag):
    """`(argument, value)`: a command-line word setting `flag` off its default, and the value."""
    kind = flag.flag_type()
    if kind == "bool":
        return (f"--no{flag.name}" if flag.default else f"--{flag.name}"), not flag.default
    if kind == "string enum":
        value = [v for v in flag.parser.enum_values if v != flag.default][-1]
    elif kind in ("int", "float"):
        value = (flag.default or 0) + (7 if kind == "int" else 0.25)
    elif kind == "string":
        value = f"runs/{flag.name}"
    else:
        assert kind == "comma separated list of strings", kind
        value = (64, 96)
    text = ",".join(map(str, value)) if isinstance(value, tuple) else value
    return f"--{flag.name}={text}", value


@pytest.mark.parametrize("family", FAMILIES)
def test_a_value_for_every_flag_reaches_the_config(family):
    values = _defined(family)
    fields = training_flags.flag_names(family)
    changed = {field: _other_value(values[flag]) for field, flag in fields.items()}
    values(["recipe", *(argument for argument, _ in changed.values())])
    config = training_flags.config_from_flags(family, values)
    assert {field: getattr(config, field) for field in fields} == {
        field: value for field, (_, value) in changed.items()
    }
    assert config.family == family


def test_each_recipe_has_its_own_defaults(tmp_path):
    def parsed(family):
        values = _defined(family)
        values(["recipe", f"--model_dir={tmp_path}"])
        return training_flags.config_from_flags(family, values)

    cifar = TrainConfig(model_dir=str(tmp_path))
    assert parsed("cifar") == cifar
    assert parsed("imagenet") == dataclasses.replace(
        cifar,
        family="imagenet",
        dataset="imagenet2012",
        depth=200,
        batch_size=256,
        image_size=224,
        eval_crop_sizes=(224, 320),
        schedule="imagenet",
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_error_messages_name_flags_not_fields(family):
    for field, flag in training_flags.flag_names(family).items():
        for message in (
            "{} must be a positive integer, got 0.",
            "Unknown {} 'x'. Allowed values: 'a', 'b'.",
            "Give {} or both_of_them, not both.",
            "{}=3 needs {} unset.",
            "A run with other settings ({}: 8 there, 14 now).",
        ):
            translated = training_flags.flag_words(message.format(field, field), family)
            assert translated == message.format(f"--{flag}", f"--{flag}")
    # One-word names that are English words too stay words where they are not names.
    for words in (
        "ImageNet weights exist for depths 50, 101; the weights' own crop.",
        "(ImageNet weights: family 'imagenet', recipes/imagenet.py).",
        "unit is fixed by the depth for ImageNet nets; leave it unset.",
        "Pass it to a builder (keras_preact.ResNet50V2(weights='imagenet')).",
    ):
        assert training_flags.flag_words(words, "imagenet") == words
    assert training_flags.flag_words("data_dir '/runs/model_dir/depth' does not exist.") == (
        "--data_dir '/runs/model_dir/depth' does not exist."
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(eval_only=True), "--eval_only needs --weights: the model to evaluate ('imagenet', "),
        (
            dict(eval_only=True, weights="imagenet", export_dir="out"),
            "--eval_only trains no model, so --export_dir has nothing to export.",
        ),
        (dict(learning_rate=0.0), "Need --learning_rate > 0, 0 <= --momentum < 1,"),
        (dict(epochs=2, train_steps=5), "Give --epochs or --train_steps, not both."),
    ],
)
def test_cross_field_checks_read_as_flags(changes, message):
    config = TrainConfig(dataset="digits", model_dir="m", depth=20, **changes)
    with pytest.raises(ValueError) as error:
        config.validate()
    assert training_flags.flag_words(str(error.value), "cifar").startswith(message)


@pytest.mark.slow
@pytest.mark.parametrize("family, help_flag", [("imagenet", "--help"), ("cifar", "-h")])
def test_help_lists_the_recipes_flags_by_section(family, help_flag):
    proc = _recipe(family, help_flag)
    assert proc.returncode == 0, proc.stderr[-3000:]
    headings = [line[:-1] for line in proc.stdout.splitlines() if line[:-1] in GROUPS]
    assert headings == list(GROUPS)
    for name in training_flags.flag_names(family).values():
        assert f"--{name}:" in proc.stdout or f"--[no]{name}:" in proc.stdout
    others = set(training_flags.flag_names()) - set(training_flags.flag_names(family))
    assert others and not any(f"--{name}:" in proc.stdout for name in others)
    depth = {"cifar": 110, "imagenet": 200}[family]
    assert "--depth: Network depth" in proc.stdout and f"(default: '{depth}')" in proc.stdout


@pytest.mark.slow
def test_a_bad_value_is_an_error_in_flag_words(tmp_path):
    model_dir = tmp_path / "m"
    proc = _recipe("cifar", "--dataset=digits", f"--model_dir={model_dir}", "--batch_size=0")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == "Error: --batch_size must be a positive integer, got 0."
    assert "Traceback" not in proc.stderr
    assert not model_dir.exists()
