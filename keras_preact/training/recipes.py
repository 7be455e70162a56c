"""Named recipes (`--recipe`): documented presets of the training flags.

A recipe fills the `TrainConfig` fields the user did not set: on the command
line, the flags not given; in Python, `TrainConfig.given` (the fields set),
else the fields still at their defaults. A flag given explicitly always wins,
and `metrics.json` records every resolved value (`SETTINGS`).

* `paper`: nothing changes; the paper's training (and every default).
* `rsb_a3`: "ResNet strikes back" (Wightman et al. 2021, Table 1), procedure
  A3: LAMB at lr 8e-3 for batch 2048 (scaled by the square root of the batch
  ratio, timm's rule for LAMB), weight decay 0.02, cosine schedule with a
  5-epoch warm-up over 100 epochs, binary cross-entropy, mixup 0.1 and
  cutmix 1.0, RandAugment m6 std 0.5 (timm's `rand-m6-mstd0.5-inc1`), no
  label smoothing, no stochastic depth, no EMA; train at 160, test at 224.
  Not reproduced: repeated augmentation (A1/A2 only) and the 0.95 test-crop
  ratio (the weights' eval protocol decides the crop).
* `bit`: BiT-HyperRule for fine-tuning (Kolesnikov et al. 2020,
  `bit_hyperrule.py`): SGD with momentum 0.9 at lr 0.003 for batch 512
  (linear scaling), no weight decay, a linear warm-up then / 10 three times
  (`schedules.bit_supports`: 500 steps under 20k training images, 10k under
  500k, else 20k), mixup 0.1 from 20k images up; photos train and test at
  480 (the rule for images of at least 96x96 pixels; CIFAR-size data keeps
  its size, where BiT upsamples to 128). BiT's own crop is a random 480 crop
  of the image resized to 512 square; the recipes take the random-resized
  crop of the paper at 480.

>>> preset("rsb_a3", "imagenet", num_examples=1_281_167)["optimizer"]
'lamb'
>>> preset("bit", "imagenet", num_examples=5_000)["mixup_alpha"]
0.0
"""

from __future__ import annotations

import dataclasses

RECIPE_NAMES = ("paper", "rsb_a3", "bit")

_RSB_A3 = {
    "optimizer": "lamb",
    "learning_rate": 8e-3,
    "lr_reference_batch": 2048,
    "weight_decay": 0.02,
    "schedule": "cosine",
    "warmup_epochs": 5.0,
    "epochs": 100.0,
    "loss": "bce",
    "label_smoothing": 0.0,
    "mixup_alpha": 0.1,
    "cutmix_alpha": 1.0,
    "randaugment": True,
    "randaugment_ops": 2,
    "randaugment_magnitude": 6.0,
    "randaugment_std": 0.5,
}
_RSB_A3_PHOTOS = {"image_size": 160, "eval_crop_sizes": (224,)}

BIT_MIXUP_FROM = 20_000  # training images
BIT_PHOTO_SIZE = 480

# What metrics.json records of a run's training settings, resolved.
SETTINGS = (
    "recipe",
    "optimizer",
    "learning_rate",
    "lr_reference_batch",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "epochs",
    "train_steps",
    "batch_size",
    "gradient_accumulation_steps",
    "layer_decay",
    "loss",
    "label_smoothing",
    "mixup_alpha",
    "cutmix_alpha",
    "randaugment",
    "randaugment_ops",
    "randaugment_magnitude",
    "randaugment_std",
    "random_erasing",
    "ema_decay",
    "drop_path_rate",
    "freeze",
    "linear_probe_epochs",
    "image_size",
    "eval_crop_sizes",
    "tta",
)


def preset(name, family, num_examples):
    """The field values recipe `name` sets for `family`'s recipe and a training set's size."""
    if name == "paper":
        return {}
    if name == "rsb_a3":
        return {**_RSB_A3, **(_RSB_A3_PHOTOS if family == "imagenet" else {})}
    if name == "bit":
        values = {
            "optimizer": "sgd",
            "momentum": 0.9,
            "learning_rate": 0.003,
            "lr_reference_batch": 512,
            "weight_decay": 0.0,
            "schedule": "bit",
            "mixup_alpha": 0.0 if num_examples < BIT_MIXUP_FROM else 0.1,
        }
        if family == "imagenet":
            values.update(image_size=BIT_PHOTO_SIZE, eval_crop_sizes=(BIT_PHOTO_SIZE,))
        return values
    raise ValueError(f"Unknown recipe {name!r}. Allowed values: {', '.join(RECIPE_NAMES)}.")


def given_fields(config):
    """The fields the user set: `config.given`, else those that differ from their defaults."""
    if config.given is not None:
        return set(config.given)
    return {
        field.name
        for field in dataclasses.fields(config)
        if field.default is not dataclasses.MISSING and getattr(config, field.name) != field.default
    }


def apply_recipe(config, num_examples):
    """`config` (a `TrainConfig`) with its recipe's values in every field the user did not set.

    `num_examples` is the training set's size (BiT's rules depend on it).
    """
    given = given_fields(config)
    if given & {"epochs", "train_steps"}:  # one run length: the user's
        given |= {"epochs", "train_steps"}
    values = preset(config.recipe, config.family, num_examples or 0)
    return dataclasses.replace(config, **{k: v for k, v in values.items() if k not in given})


def settings(config):
    """The resolved training settings of `config`, as metrics.json records them."""
    values = {name: getattr(config, name) for name in SETTINGS}
    values["eval_crop_sizes"] = list(values["eval_crop_sizes"])
    return values
