"""The training loop under MirroredStrategy and MultiWorkerMirroredStrategy, in real processes.

Each process trains the same tiny pre-activation ResNet on the same fixed
data (no shuffling, so that every strategy sees the same global batches) and
saves its per-step losses, evaluation and final weights. The references are
a one-device run in another process of the same program.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOBAL_BATCH = 16
STEPS = 6

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import tensorflow as tf

    mode, out = sys.argv[1], sys.argv[2]
    if mode == "local":  # two logical CPU devices, before TensorFlow initialises
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from keras_preact import CIFARResNetV2, training

    tf.config.experimental.enable_op_determinism()
    GLOBAL_BATCH, STEPS = {global_batch}, {steps}
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (GLOBAL_BATCH * STEPS, 16, 16, 3)).astype("float32")
    y = rng.randint(0, 10, len(x)).astype("int32")
    x_eval, y_eval = x[:37], y[:37]  # 37: uneven over replicas, some get empty batches

    def train_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.batch(ctx.get_per_replica_batch_size(GLOBAL_BATCH), drop_remainder=True).repeat()

    def eval_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices((x_eval, y_eval))
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.batch(ctx.get_per_replica_batch_size(GLOBAL_BATCH))

    def sgd():
        return training.CoupledSGD(training.step_schedule(0.1, [4], warmup_steps=1), l2=1e-4)

    def lamb():  # a global norm that every step's gradient exceeds: each step is clipped
        return training.Lamb(0.01, weight_decay=0.01, global_clipnorm=0.05)

    def train(strategy, model_dir, sync, steps_per_loop=1, steps_per_epoch=1, optimizer=sgd):
        def build():
            keras.utils.set_random_seed(1)
            model = CIFARResNetV2(8, width=4, input_shape=(16, 16, 3), classifier_activation=None)
            return training.synchronize_batchnorm(model) if sync else model

        trainer = training.Trainer(
            strategy, build, optimizer,
            global_batch_size=GLOBAL_BATCH, model_dir=model_dir, checkpoint_every=3,
            steps_per_loop=steps_per_loop, verbose=0,
        )
        trainer.restore()
        history = trainer.fit(train_fn, total_steps=STEPS, steps_per_epoch=steps_per_epoch)
        result = dict(
            losses=np.array([row["loss"] for row in history]),
            weights=np.concatenate([w.ravel() for w in trainer.model.get_weights()]),
            eval=np.array([trainer.evaluate(eval_fn)[k] for k in ("loss", "top1", "top5", "count")]),
            iterations=int(trainer.optimizer.iterations.numpy()),
            replicas=strategy.num_replicas_in_sync,
        )
        worker_dir = trainer._worker_dir
        trainer.close()
        result["worker_dir_left"] = bool(worker_dir and os.path.exists(worker_dir))
        return trainer, result

    if mode == "local":
        results = {{}}
        one_device = training.make_strategy("one_device")
        _, results["one_device"] = train(one_device, out + "_one", True)
        _, results["one_device_lamb"] = train(one_device, None, True, optimizer=lamb)
        # One MirroredStrategy for both runs: two instances in one process reuse
        # collective keys, which TensorFlow rejects.
        mirrored = training.make_strategy("mirrored")
        # 4 steps per tf.function call, cut at epoch ends (2 steps) and checkpoints (3).
        _, results["mirrored"] = train(mirrored, out + "_mir", True, 4, 2)
        _, results["per_replica_bn"] = train(mirrored, None, False)
        _, results["mirrored_lamb"] = train(mirrored, None, True, optimizer=lamb)
        errors = []
        try:
            training.Trainer(training.make_strategy("mirrored"), None, None, global_batch_size=15)
        except ValueError as e:
            errors.append(str(e))
        bad = training.TrainConfig(
            dataset="digits", model_dir=out + "_bad", depth=8, width=4, batch_size=15,
            strategy="mirrored", train_steps=2,
        )
        try:
            training.run(bad)
        except training.ConfigError as e:
            errors.append(str(e))
        errors.append(os.path.exists(out + "_bad"))
        np.savez(out + ".npz", **{{f"{{k}}_{{f}}": v for k, r in results.items() for f, v in r.items()}})
        with open(out + ".json", "w") as f:
            json.dump(errors, f)
    else:
        strategy = training.make_strategy("multi_worker_mirrored")
        _, result = train(strategy, out + "_model", True)
        # A new trainer (a restarted worker) resumes from the chief's checkpoint.
        again, _ = train(strategy, out + "_model", True)
        result["restored_step"] = again.current_step
        result["chief"] = training.is_chief(strategy)
        np.savez(out + "_" + os.environ["WORKER_INDEX"] + ".npz", **result)
    """
).format(global_batch=GLOBAL_BATCH, steps=STEPS)


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "train_script.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def local_runs(script):
    out = str(script.parent / "local")
    proc = subprocess.run(
        [sys.executable, str(script), "local", out],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = dict(np.load(out + ".npz"))
    with open(out + ".json") as f:
        errors = json.load(f)
    return runs, errors


@pytest.mark.slow
def test_mirrored_on_two_devices_matches_one_device(local_runs):
    runs, _ = local_runs
    assert runs["one_device_replicas"] == 1 and runs["mirrored_replicas"] == 2
    one, mirrored = runs["one_device_losses"], runs["mirrored_losses"]
    assert len(one) == STEPS and len(mirrored) == STEPS // 2
    assert one[-1] < one[0]  # it trains
    # The mirrored run logs 2-step epochs: the mean of each pair of one-device steps.
    np.testing.assert_allclose(mirrored, (one[0::2] + one[1::2]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs["mirrored_weights"], runs["one_device_weights"], atol=1e-4)
    # Exact evaluation over an uneven split: 37 examples, same metrics.
    assert runs["mirrored_eval"][3] == runs["one_device_eval"][3] == 37
    np.testing.assert_allclose(runs["mirrored_eval"], runs["one_device_eval"], rtol=1e-5)
    assert runs["mirrored_iterations"] == runs["one_device_iterations"] == STEPS
    # LAMB clips the global batch's gradient to a norm of 0.05 at every step, on 1 device or 2.
    # (Keras alone clips each replica's half: the weights then differ by up to 0.04; Adam's
    # normalisation turns summation-order rounding into up to 2e-4 here.)
    np.testing.assert_allclose(
        runs["mirrored_lamb_weights"], runs["one_device_lamb_weights"], atol=1e-3
    )
    # Control: per-replica BatchNorm (the default, as in the paper's multi-GPU
    # code) normalises each half-batch on its own, so the curve moves away.
    assert np.abs(runs["per_replica_bn_losses"][1:] - one[1:]).max() > 1e-4


@pytest.mark.slow
def test_batch_size_not_divisible_by_replicas_fails_before_training(local_runs):
    _, errors = local_runs
    trainer_error, run_error, bad_dir_exists = errors
    assert "not divisible" in trainer_error and "2 replicas" in trainer_error
    assert "batch_size 15" in run_error and "multiple of 2" in run_error
    assert bad_dir_exists is False


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes_match_single_process(script, local_runs):
    runs, _ = local_runs
    out = str(script.parent / "mw")
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), "worker", out],
                env=_env(TF_CONFIG=tf_config, WORKER_INDEX=str(index)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        try:
            _, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, stderr[-4000:]
    workers = [dict(np.load(f"{out}_{i}.npz")) for i in range(2)]
    assert [bool(w["chief"]) for w in workers] == [True, False]
    assert all(w["replicas"] == 2 for w in workers)
    # Both workers end with identical weights...
    np.testing.assert_array_equal(workers[0]["weights"], workers[1]["weights"])
    # ... equal to single-process training on the same global batches.
    np.testing.assert_allclose(workers[0]["losses"], runs["one_device_losses"], rtol=1e-5)
    np.testing.assert_allclose(workers[0]["weights"], runs["one_device_weights"], atol=1e-4)
    np.testing.assert_allclose(workers[0]["eval"], runs["one_device_eval"], rtol=1e-5)
    # Only the chief wrote to model_dir; the other worker's temporary copy is gone.
    checkpoints = sorted(os.listdir(out + "_model/checkpoints"))
    assert "ckpt-6.index" in checkpoints and "ckpt-3.index" in checkpoints
    assert not any(bool(w["worker_dir_left"]) for w in workers)
    # A restarted trainer on each worker resumes at the chief's last step.
    assert [int(w["restored_step"]) for w in workers] == [STEPS, STEPS]
