"""keras_preact.training in-process: schedules, coupled-L2 SGD, config and flag checking."""

import os
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from keras_preact import data, training
from keras_preact.training import flags as training_flags


def _lrs(schedule, steps):
    return [float(schedule(s)) for s in steps]


# ------------------------------------------------------------------ schedules


def test_cifar_schedule_is_the_papers_at_batch_128():
    # Paper appendix: 0.01 for 400 iterations, 0.1, / 10 at 32k and 48k, stop at 64k.
    schedule = training.cifar_schedule(128)
    steps = [0, 399, 400, 31_999, 32_000, 47_999, 48_000, 63_999]
    expected = [0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    np.testing.assert_allclose(_lrs(schedule, steps), expected, rtol=1e-6)
    assert training.cifar_total_steps(128) == 64_000


def test_cifar_schedule_scales_with_batch_size():
    # Batch 64: twice the steps over the same examples, half the learning rate.
    schedule = training.cifar_schedule(64)
    assert training.cifar_total_steps(64) == 128_000
    steps = [799, 800, 63_999, 64_000, 95_999, 96_000]
    np.testing.assert_allclose(
        _lrs(schedule, steps), [0.005, 0.05, 0.05, 0.005, 0.005, 0.0005], rtol=1e-6
    )


def test_cifar_schedule_keeps_its_shape_on_a_short_run():
    # 640 steps = 1% of the paper's run: warm-up 4 steps, decays at 320 and 480.
    schedule = training.cifar_schedule(128, total_steps=640)
    steps = [3, 4, 319, 320, 479, 480]
    np.testing.assert_allclose(
        _lrs(schedule, steps), [0.01, 0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6
    )


def test_imagenet_schedule_scales_lr_with_batch_and_decays_every_30_epochs():
    spe = 1_281_167 // 1024
    schedule = training.imagenet_schedule(1024, steps_per_epoch=spe)
    steps = [0, 30 * spe - 1, 30 * spe, 60 * spe, 90 * spe]
    np.testing.assert_allclose(_lrs(schedule, steps), [0.4, 0.4, 0.04, 0.004, 0.0004], rtol=1e-6)


def test_finetune_schedule_warms_up_linearly_then_decays_to_zero():
    # Batch 512: peak 0.01 * 512/256 = 0.02; warm-up over 5% of 1,000 steps (50) from 0,
    # then a cosine over the other 950, half-way (0.01) at step 50 + 475, 0 at step 1,000.
    schedule = training.finetune_schedule(512, total_steps=1000)
    steps = [0, 25, 50, 525, 1000]
    np.testing.assert_allclose(_lrs(schedule, steps), [0, 0.01, 0.02, 0.01, 0], atol=1e-9)
    lrs = np.array(_lrs(schedule, range(1001)))
    assert np.all(np.diff(lrs[:51]) > 0) and np.all(np.diff(lrs[50:]) < 0)
    # --learning_rate is at batch 256 too; a short run warms up for (at least) one step.
    short = training.finetune_schedule(128, total_steps=3, base_learning_rate=0.1)
    np.testing.assert_allclose(_lrs(short, [0, 1, 2, 3]), [0, 0.05, 0.025, 0], atol=1e-9)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert _lrs(restored, steps) == _lrs(schedule, steps)


def test_schedule_and_optimizer_serialize():
    schedule = training.cifar_schedule(256, total_steps=1000)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    steps = [0, 5, 6, 499, 500, 749, 750]
    assert _lrs(restored, steps) == _lrs(schedule, steps)
    opt = training.CoupledSGD(schedule, momentum=0.9, l2=3e-4)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(clone, training.CoupledSGD)
    assert clone.l2 == 3e-4 and clone.momentum == 0.9
    assert clone.get_config()["learning_rate"] == opt.get_config()["learning_rate"]


# -------------------------------------------------------------- CoupledSGD


def test_coupled_sgd_matches_torch_optim_sgd_reference():
    """Against a numpy transcription of Torch's optim.sgd (fb.resnet.torch's optimizer)."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 3)).astype("float32")
    b0 = rng.normal(size=(3,)).astype("float32")
    grads = [
        (rng.normal(size=w0.shape).astype("float32"), rng.normal(size=b0.shape).astype("float32"))
        for _ in range(6)
    ]
    l2, momentum = 1e-2, 0.9
    schedule = training.step_schedule(0.1, [3])  # lr 0.1 for steps 0-2, 0.01 after
    opt = training.CoupledSGD(schedule, momentum=momentum, l2=l2)
    w, b = keras.Variable(w0), keras.Variable(b0)
    for gw, gb in grads:
        opt.apply([tf.constant(gw), tf.constant(gb)], [w, b])

    # Torch: dfdx += wd * x; buf = mom * buf + dfdx; x -= lr * buf (dampening 0).
    ref = [w0.astype("float64"), b0.astype("float64")]
    bufs = [np.zeros_like(ref[0]), np.zeros_like(ref[1])]
    for step, pair in enumerate(grads):
        lr = 0.1 if step < 3 else 0.01
        for i, g in enumerate(pair):
            d = g + l2 * ref[i]
            bufs[i] = momentum * bufs[i] + d
            ref[i] = ref[i] - lr * bufs[i]
    np.testing.assert_allclose(w.numpy(), ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), ref[1], rtol=1e-5, atol=1e-6)
    assert int(opt.iterations.numpy()) == 6

    # Keras' own SGD (decoupled decay, lr folded into the velocity) ends elsewhere.
    keras_opt = keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=l2)
    kw = keras.Variable(w0)
    for gw, _ in grads:
        keras_opt.apply([tf.constant(gw)], [kw])
    assert np.abs(kw.numpy() - ref[0]).max() > 1e-4


def test_coupled_sgd_rejects_decoupled_weight_decay():
    with pytest.raises(ValueError, match="l2"):
        training.CoupledSGD(0.1, weight_decay=1e-4)


# --------------------------------------------------------- config and flags


def _parse(family, argv):
    values = flags.FlagValues()
    training_flags.define_flags(family, values)
    values(["recipe", *argv])
    return training_flags.config_from_flags(family, values)


def test_table_rows_are_one_command_each(tmp_path):
    # Table 1, exclusive gating b_g = -6, on the original unit.
    config = _parse(
        "cifar",
        [
            f"--model_dir={tmp_path}",
            "--depth=8",
            "--width=4",
            "--unit_variant=original",
            "--shortcut=exclusive_gating",
            "--gate_bias_init=-6",
        ],
    )
    config.validate()
    assert (config.unit_variant, config.shortcut, config.gate_bias_init) == (
        "original",
        "exclusive_gating",
        -6.0,
    )
    assert (config.batch_size, config.schedule, config.dataset) == (128, "cifar", "cifar10")
    model = training.build_model(config, data.dataset_info("cifar10"))
    units = [layer for layer in model.layers if layer.name.startswith("stage")]
    assert len(units) == 3
    assert all(u.get_config()["gate_bias_init"] == -6.0 for u in units)
    assert all(u.get_config()["unit_variant"] == "original" for u in units)
    assert model.output_shape == (None, 10)

    imagenet = _parse("imagenet", [f"--model_dir={tmp_path}", "--eval_crop_sizes=224,320"])
    imagenet.validate()
    assert (imagenet.depth, imagenet.batch_size, imagenet.eval_crop_sizes) == (200, 256, (224, 320))
    assert imagenet.schedule == "imagenet"


def test_weights_flags_layout_follows_the_weights(tmp_path):
    info = data.dataset_info("imagenet2012")
    base = [f"--model_dir={tmp_path}", "--depth=50", "--weights=keras:resnet50v2"]
    config = _parse("imagenet", [*base, "--schedule=finetune", "--epochs=1"])
    config.validate()
    assert (config.weights, config.layout, config.schedule) == (
        "keras:resnet50v2",
        None,
        "finetune",
    )
    assert config.learning_rate is None  # the schedule's own: 0.01 for finetune
    name, kwargs = training.builder_call(config, info)  # resolves, downloads nothing
    assert (name, kwargs["layout"]) == ("ImageNetResNetV2", "keras") and "weights" not in kwargs
    assert (
        training.builder_call(_parse("imagenet", [f"--model_dir={tmp_path}"]), info)[1]["layout"]
        == "paper"
    )
    with pytest.raises(ValueError, match="eval_only needs weights"):
        _parse("imagenet", [f"--model_dir={tmp_path}", "--eval_only"]).validate()
    with pytest.raises(ValueError, match="no default length"):
        _parse("imagenet", [*base, "--schedule=finetune"]).validate()


@pytest.mark.parametrize(
    "flag",
    [
        "--dataset=mnist",
        "--strategy=horovod",
        "--unit_variant=post_activation",
        "--shortcut=highway",
        "--unit=wide",
    ],
)
def test_unknown_flag_values_are_rejected_with_the_allowed_ones(tmp_path, flag):
    with pytest.raises(flags.IllegalFlagValueError, match="should be one of"):
        _parse("cifar", [f"--model_dir={tmp_path}", flag])


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(depth=21), "6n\\+2"),
        (dict(depth=32, unit="bottleneck"), "9n\\+2"),
        (dict(family="imagenet", depth=110), "Allowed values: 18, 34"),
        (dict(epochs=3, train_steps=10), "not both"),
        (dict(batch_size=0), "batch_size"),
        (dict(model_dir=""), "model_dir"),
        (dict(jit_compile=True, sync_batchnorm=True), "jit_compile"),
        (dict(strategy="parameter_server"), "Unknown strategy"),
    ],
)
def test_bad_configs_are_rejected(tmp_path, changes, message):
    config = training.TrainConfig(dataset="digits", model_dir=str(tmp_path), depth=20)
    for key, value in changes.items():
        setattr(config, key, value)
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_missing_data_is_reported_before_anything_is_written(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for data_dir, expected in ((tmp_path / "absent", "does not exist"), (empty, str(empty))):
        model_dir = tmp_path / "run"
        config = training.TrainConfig(
            dataset="cifar10", data_dir=str(data_dir), model_dir=str(model_dir), depth=20
        )
        with pytest.raises(training.ConfigError, match=expected):
            training.run(config)
        assert not model_dir.exists()


def test_stop_signals_catch_sigterm_and_ctrl_c_then_restore_the_handlers():
    """What the recipes rely on for SIGTERM and a first Ctrl-C (end to end: test_recipes.py)."""
    from keras_preact.training.loop import Preempted, StopSignals

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with StopSignals() as stop:
            os.kill(os.getpid(), sig)
            deadline = time.time() + 10
            while stop.received is None and time.time() < deadline:
                time.sleep(0.01)
        assert stop.received == sig.name
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert Preempted(5, "ckpt-5", "SIGTERM").code == 143
    assert Preempted(5, "ckpt-5", "SIGINT").code == 130
    other = Preempted(5, "ckpt-5")  # a worker stopped by another worker's signal
    assert other.code == 143 and str(other).startswith("Another worker received a stop signal")


@pytest.mark.parametrize("strategy", ["default", "one_device", "mirrored"])
def test_mixed_precision_is_float16_on_gpus_and_bfloat16_on_cpus(strategy):
    """--mixed_precision: float16 (with loss scaling) where the strategy's devices are GPUs,
    bfloat16 on CPUs, their native half type (float16 there is emulated, slower than float32)."""
    from keras_preact.training.run import mixed_precision_policy
    from keras_preact.training.strategy import make_strategy

    gpus = bool(tf.config.list_physical_devices("GPU"))  # every strategy here then uses them
    expected = "mixed_float16" if gpus else "mixed_bfloat16"
    assert mixed_precision_policy(make_strategy(strategy)) == expected


@pytest.mark.parametrize("what", ["backbone", "bn", "linear_probe"])
def test_freeze_leaves_every_frozen_variable_bit_identical(tmp_path, what, randomize_batchnorm):
    """A short run from saved weights: with freeze='backbone' only the classifier moves (BN
    statistics included, frozen BNs run in inference mode); with 'bn' no BN variable moves;
    with linear_probe_epochs the backbone stays as loaded to the probe's end, then trains."""
    from keras_preact.training.run import build_model, run

    probe = what == "linear_probe"
    config = training.TrainConfig(
        dataset="digits",
        model_dir=str(tmp_path / "run"),
        depth=8,
        width=4,
        train_steps=4 if probe else 3,
        batch_size=16,
        seed=0,
        verbose=0,
        freeze="none" if probe else what,
        linear_probe_epochs=2 / 89 if probe else 0.0,  # 2 steps of 89 per epoch
        checkpoint_every=2,
        weights=str(tmp_path / "start.weights.h5"),
    )
    start = randomize_batchnorm(build_model(config, data.dataset_info("digits")))
    start.save_weights(config.weights)
    run(config)
    trained = build_model(config, data.dataset_info("digits"))
    before = {v.path: v.numpy() for v in start.weights}
    if probe:  # the checkpoint at the probe's end: only the classifier has moved
        tf.train.Checkpoint(model=trained).read(
            os.path.join(config.model_dir, "checkpoints", "ckpt-2")
        ).expect_partial()
        _assert_only_the_head_moved(trained, before, "backbone")
        final = build_model(config, data.dataset_info("digits"))
        final.load_weights(os.path.join(config.model_dir, "model.weights.h5"))
        stem = [v for v in final.weights if v.path.endswith("kernel")][0]
        assert not np.array_equal(stem.numpy(), before[stem.path]), stem.path
        return
    trained.load_weights(os.path.join(config.model_dir, "model.weights.h5"))
    _assert_only_the_head_moved(trained, before, what)
    with pytest.raises(ValueError, match="trains only the classifier"):
        training.TrainConfig(
            dataset="digits", model_dir=str(tmp_path), depth=8, freeze="backbone"
        ).validate()


def _assert_only_the_head_moved(trained, before, what):
    """Every variable `what` freezes is as `before`; every kernel of what trains moved."""
    for variable in trained.weights:
        path = variable.path
        head = path.startswith("predictions/")
        norm = any(part in path for part in ("norm", "post_bn")) and "preprocessing" not in path
        frozen = not head if what == "backbone" else norm
        moved = not np.array_equal(variable.numpy(), before[path])
        if frozen:
            assert not moved, path
        elif path.endswith("kernel"):
            assert moved, path  # what trains does train
