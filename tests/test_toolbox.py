"""The fine-tuning toolbox (issue 20): optimizers, losses, weight EMA, gradient accumulation,
recipes and their schedules, each checked against its formula or an independent reference."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from keras_preact import CIFARResNetV2, training
from keras_preact.training import flags as training_flags
from keras_preact.training import recipes, schedules
from keras_preact.training.config import ConfigError
from keras_preact.training.optimizer import layer_decay_multipliers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_net(seed=1):
    keras.utils.set_random_seed(seed)
    return CIFARResNetV2(8, width=4, input_shape=(16, 16, 3), classifier_activation=None)


def _kernels_by_layer_type(model):
    """Paths of the conv and dense kernels, found from the layers' types (not from shapes)."""
    paths = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            paths.add(layer.kernel.path)
    return paths


# ------------------------------------------------------------------ optimizers


@pytest.mark.parametrize("name, kept", [("adamw", 1 - 0.1 * 0.5), ("lamb", 1 - 0.1)])
def test_decoupled_decay_moves_exactly_the_kernels(name, kept):
    """With zero gradients only the decay acts: it shrinks every conv and dense kernel (AdamW:
    by lr * wd; LAMB: a step of lr * ||w|| along w) and leaves every BN gamma/beta and every
    bias exactly as it was."""
    model = _tiny_net()
    variables = model.trainable_variables
    optimizer = training.make_optimizer(name, 0.1, weight_decay=0.5)
    optimizer.build(variables)
    before = {v.path: v.numpy() for v in variables}
    optimizer.apply([tf.zeros_like(v) for v in variables], variables)
    moved = {v.path for v in variables if not np.array_equal(v.numpy(), before[v.path])}
    kernels = _kernels_by_layer_type(model)
    assert moved == kernels and len(kernels) == 10
    assert any(path.endswith(("gamma", "beta", "bias")) for path in before)  # what must not move
    for v in variables:
        if v.path in kernels:
            np.testing.assert_allclose(v.numpy(), before[v.path] * kept, rtol=1e-5)


def _lamb_reference(weights, grads_per_step, lr, wd, decayed, beta1=0.9, beta2=0.999, eps=1e-6):
    """timm's Lamb (max_grad_norm 1, bias correction, always_adapt False) in NumPy."""
    weights = [w.astype(np.float64) for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for step, grads in enumerate(grads_per_step, start=1):
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
        grads = [g / max(norm, 1.0) for g in grads]
        for i, g in enumerate(grads):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            update = (m[i] / (1 - beta1**step)) / (np.sqrt(v[i] / (1 - beta2**step)) + eps)
            if decayed[i]:
                update = update + wd * weights[i]
                w_norm, u_norm = np.linalg.norm(weights[i]), np.linalg.norm(update)
                update = update * (w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
            weights[i] = weights[i] - lr * update
    return weights


def test_lamb_follows_timms_update():
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)), rng.normal(size=(4,))]
    grads = [[rng.normal(size=w.shape) * 2 for w in start] for _ in range(3)]  # norm > 1: clipped
    variables = [keras.Variable(w.astype("float32")) for w in start]
    optimizer = training.Lamb(learning_rate=0.01, weight_decay=0.1)
    for step_grads in grads:
        optimizer.apply([g.astype("float32") for g in step_grads], variables)
    expected = _lamb_reference(start, grads, lr=0.01, wd=0.1, decayed=[True, False])
    for variable, reference in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), reference, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adamw", "lamb"])
def test_layer_decay_scales_each_variables_step_by_its_groups_factor(name):
    """One step with layer decay 0.5 moves every variable by its group's factor times the step
    without (decay included): stem 0.5^4, unit k of 3 0.5^(4-k), final norm and head 1."""
    model = _tiny_net()
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
    start = [v.numpy() for v in variables]

    def step(multipliers):
        optimizer = training.make_optimizer(
            name, 0.01, weight_decay=0.1, learning_rate_multipliers=multipliers
        )
        optimizer.apply(grads, variables)
        moved = [v.numpy() - s for v, s in zip(variables, start)]
        for v, s in zip(variables, start):
            v.assign(s)
        return moved

    factors = layer_decay_multipliers(model, 0.5)
    expected = {"stem_conv/kernel": 0.5**4, "stage1_unit1/conv1/kernel": 0.5**3}
    expected.update({"stage3_unit1/norm1/gamma": 0.5, "post_bn/gamma": 1.0})
    assert {k: factors[k] for k in expected} == expected and factors["predictions/kernel"] == 1
    for variable, plain, scaled in zip(variables, step(None), step(factors)):
        np.testing.assert_allclose(
            scaled, plain * factors[variable.path], rtol=2e-4, atol=1e-7, err_msg=variable.path
        )


# ---------------------------------------------------------------------- losses


def _trainer(model_fn=_tiny_net, **kwargs):
    return training.Trainer(
        training.make_strategy("default"),
        model_fn,
        lambda: training.CoupledSGD(0.05),
        global_batch_size=8,
        verbose=0,
        **kwargs,
    )


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("loss", ["cross_entropy", "bce"])
@pytest.mark.parametrize("soft", [False, True])
def test_losses_with_label_smoothing_and_soft_labels_match_their_formulas(loss, soft):
    trainer = _trainer(
        lambda: keras.Sequential([keras.Input([5]), keras.layers.Dense(5)]),
        loss=loss,
        label_smoothing=0.1,
    )
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5)).astype("float32")
    classes = np.array([0, 3, 4, 1])
    targets = np.eye(5)[classes]
    if soft:  # mixup rows: lam * y + (1 - lam) * y_reversed
        targets = 0.7 * targets + 0.3 * targets[::-1]
        labels = tf.constant(targets, tf.float32)
    else:
        labels = tf.constant(classes, tf.int32)
    smoothed = targets * 0.9 + 0.1 / 5
    if loss == "cross_entropy":
        expected = -(smoothed * _log_softmax(logits)).sum(-1)
    else:
        p = 1 / (1 + np.exp(-logits.astype(np.float64)))
        expected = -(smoothed * np.log(p) + (1 - smoothed) * np.log(1 - p)).mean(-1)
    got = trainer._per_example_loss(labels, tf.constant(logits)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ------------------------------------------------------------------ weight EMA


def _digits_like(batches, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (8 * batches, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, len(x)).astype("int32")
    return lambda ctx: tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()


def test_weight_average_follows_its_formula_and_resumes(tmp_path):
    """After each step ema = d * ema + (1 - d) * w for every float weight, BN statistics
    included; a checkpoint holds the averages and a restored trainer gets them back."""
    decay = 0.7
    trainer = _trainer(ema_decay=decay, model_dir=str(tmp_path), checkpoint_every=100)
    names = [w.path for w in trainer.model.weights if w.dtype == "float32"]
    expected = {w.path: w.numpy().astype(np.float64) for w in trainer.model.weights}
    train_fn = _digits_like(3)
    for step in (1, 2, 3):
        trainer.fit(train_fn, total_steps=step, steps_per_epoch=1)
        for w in trainer.model.weights:
            if w.path in names:
                expected[w.path] = decay * expected[w.path] + (1 - decay) * w.numpy()
    averages = dict(zip(names, trainer.ema.averages))
    assert any("moving_mean" in name for name in names)
    for name in names:
        np.testing.assert_allclose(averages[name].numpy(), expected[name], rtol=1e-5, atol=1e-7)
    trainer.close()
    resumed = _trainer(ema_decay=decay, model_dir=str(tmp_path))
    assert resumed.restore() == 3
    for name, average in zip(names, resumed.ema.averages):
        np.testing.assert_array_equal(average.numpy(), averages[name].numpy())


# --------------------------------------------------------- gradient accumulation

ACCUMULATION_SCRIPT = textwrap.dedent(
    """
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from keras_preact import CIFARResNetV2, training
    from keras_preact.training.run import freeze

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, 16).astype("int32")

    def build():
        keras.utils.set_random_seed(1)
        model = CIFARResNetV2(8, width=4, input_shape=(16, 16, 3), classifier_activation=None)
        return freeze(model, "bn")  # BN in inference mode: micro-batches cannot change it

    def train_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(ctx.num_input_pipelines,
                                                             ctx.input_pipeline_id)
        return ds.batch(ctx.get_per_replica_batch_size(16), drop_remainder=True).repeat()

    def weights(strategy, k):
        trainer = training.Trainer(
            training.make_strategy(strategy), build, lambda: training.CoupledSGD(0.1, l2=1e-4),
            global_batch_size=16, verbose=0, gradient_accumulation_steps=k)
        history = trainer.fit(train_fn, total_steps=2, steps_per_epoch=2)
        return np.concatenate([w.ravel() for w in trainer.model.get_weights()]), history

    reference, reference_history = weights("default", 1)
    start = np.concatenate([w.ravel() for w in build().get_weights()])
    for strategy, k in (("default", 2), ("default", 4), ("mirrored", 2), ("mirrored", 1)):
        got, history = weights(strategy, k)
        moved = np.abs(reference - start).max()
        error = np.abs(got - reference).max()
        assert moved > 1e-3 and error < 1e-5 * max(1, moved), (strategy, k, error, moved)
        np.testing.assert_allclose(history[-1]["loss"], reference_history[-1]["loss"], rtol=1e-5)
        print("ok", strategy, k, error, moved)
    """
)


@pytest.mark.slow
def test_accumulated_micro_batches_equal_the_whole_batch_under_every_strategy():
    """k micro-batches (one after another) give the update of one batch k times larger, on one
    device and on two replicas (BN frozen: its batch statistics are the one thing that
    differs). Multi-worker runs the same replica function (`Trainer._train_step`)."""
    proc = subprocess.run(
        [sys.executable, "-c", ACCUMULATION_SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("ok ") == 4, proc.stdout


# ------------------------------------------------------------- recipes, schedules


def _parse(family, *argv):
    values = flags.FlagValues()
    training_flags.define_flags(family, values)
    values([f"{family}.py", "--model_dir=runs/x", *argv])
    return training_flags.config_from_flags(family, values)


def test_a_recipe_fills_what_the_flags_leave_and_explicit_flags_win():
    config = _parse("imagenet", "--recipe=rsb_a3", "--mixup_alpha=0.2", "--weight_decay=1e-4")
    resolved = recipes.apply_recipe(config, 1_281_167)
    resolved.validate()
    assert (resolved.optimizer, resolved.loss, resolved.schedule) == ("lamb", "bce", "cosine")
    assert (resolved.image_size, resolved.eval_crop_sizes, resolved.epochs) == (160, (224,), 100)
    assert (resolved.randaugment, resolved.randaugment_magnitude, resolved.cutmix_alpha) == (
        True,
        6.0,
        1.0,
    )
    # Given on the command line, even at its default value: the flag wins.
    assert (resolved.mixup_alpha, resolved.weight_decay) == (0.2, 1e-4)
    # In Python, the fields that differ from their defaults are the given ones.
    python = training.TrainConfig(family="imagenet", model_dir="x", recipe="bit", image_size=224)
    # (The dataclass defaults are the CIFAR recipe's: eval_crop_sizes=() is not given.)
    bit = recipes.apply_recipe(python, 50_000)
    assert (bit.image_size, bit.eval_crop_sizes, bit.mixup_alpha, bit.weight_decay) == (
        224,
        (480,),
        0.1,
        0.0,
    )
    paper = recipes.apply_recipe(_parse("cifar"), 50_000)
    assert paper == _parse("cifar")


def _bit_get_lr(step, dataset_size, base_lr=0.003):
    """BiT's `bit_hyperrule.get_lr` (google-research/big_transfer), restated."""
    if dataset_size < 20_000:
        supports = [100, 200, 300, 400, 500]
    elif dataset_size < 500_000:
        supports = [500, 3000, 6000, 9000, 10_000]
    else:
        supports = [500, 6000, 12_000, 18_000, 20_000]
    if step < supports[0]:
        return base_lr * step / supports[0]
    for s in supports[1:]:
        if s < step:
            base_lr /= 10
    return base_lr


@pytest.mark.parametrize("size", [5_000, 100_000, 1_281_167])
def test_bit_schedule_is_bits_hyperrule(size):
    supports = schedules.bit_supports(size)
    schedule = schedules.bit_schedule(0.003, supports)
    steps = np.unique(np.r_[np.arange(0, supports[-1], 37), np.array(supports) - 1, supports])
    got = [float(schedule(s)) for s in steps]
    np.testing.assert_allclose(got, [_bit_get_lr(s, size) for s in steps], rtol=1e-5, atol=1e-12)


def test_learning_rate_scales_linearly_for_sgd_and_by_the_root_for_lamb():
    assert schedules.scaled_learning_rate(0.1, 1024, 256) == pytest.approx(0.4)
    assert schedules.scaled_learning_rate(8e-3, 512, 2048, "sqrt") == pytest.approx(4e-3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--linear_probe_epochs=1"], "--linear_probe_epochs trains the classifier first"),
        (["--batch_size=10", "--gradient_accumulation_steps=4"], "--gradient_accumulation_steps"),
        (["--label_smoothing=1.5"], "--label_smoothing must be in [0, 1)"),
        (["--ema_decay=1"], "--ema_decay must be in [0, 1)"),
        (["--randaugment_magnitude=12"], "--randaugment_magnitude <= 10"),
        (["--schedule=cosine"], "give --epochs or --train_steps"),
    ],
)
def test_bad_toolbox_flags_are_one_line_errors_in_flag_words(argv, message):
    config = _parse("cifar", *argv)
    with pytest.raises(ValueError) as error:
        config.validate()
    line = training_flags.flag_words(str(error.value))
    assert message in line and "\n" not in line


def test_the_imagenet_recipe_has_the_toolbox_flags():
    """Every flag of `flag_names` is in --help (tests/test_flags.py); these are among them."""
    names = set(training_flags.flag_names("imagenet").values())
    assert {
        "optimizer",
        "label_smoothing",
        "loss",
        "mixup_alpha",
        "cutmix_alpha",
        "randaugment",
        "random_erasing",
        "ema_decay",
        "freeze",
        "linear_probe_epochs",
        "gradient_accumulation_steps",
        "drop_path_rate",
        "recipe",
        "tta",
    } <= names
    assert "adamw" in training_flags.recipe_flags("imagenet")[0].spec.help or any(
        "adamw" in str(flag.resolve("imagenet", "choices"))
        for flag in training_flags.recipe_flags("imagenet")
        if flag.kind == "enum"
    )


def test_config_error_is_raised_for_a_bad_recipe_value():
    with pytest.raises((ConfigError, ValueError), match="recipe"):
        training.TrainConfig(model_dir="x", recipe="rsb_a1").validate()
