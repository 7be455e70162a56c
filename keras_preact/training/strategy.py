"""A tf.distribute strategy by name, and who the chief is.

| name | strategy |
|---|---|
| `default` | `tf.distribute.get_strategy()` (no distribution) |
| `one_device` | `OneDeviceStrategy` on the first GPU, else the CPU |
| `mirrored` | `MirroredStrategy` on all local GPUs (all logical CPU devices when there is no GPU) |
| `multi_worker_mirrored` | `MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG` |
| `tpu` | `TPUStrategy` on the TPU named by `tpu` (`""`: the local / Cloud TPU VM) |

BatchNormalization is per replica under every strategy (each replica
normalises its own slice of the batch, as in the paper's multi-GPU Torch
code) unless the model's BN layers are synchronized (`sync_batchnorm`).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def make_strategy(name="default", tpu=None):
    """Returns the `tf.distribute.Strategy` called `name` (see the module docstring).

    Example:

    >>> strategy = make_strategy("mirrored")
    >>> strategy.num_replicas_in_sync >= 1
    True
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}. Allowed values: {', '.join(map(repr, STRATEGIES))}."
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" in os.environ:
            try:
                json.loads(os.environ["TF_CONFIG"])
            except json.JSONDecodeError as e:
                raise ValueError(f"TF_CONFIG is not valid JSON ({e}).") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
        raise ValueError(
            f"strategy 'tpu': no TPU found ({e}). Pass --tpu=<name or grpc://address> "
            "or run on a Cloud TPU VM."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def task_info(strategy):
    """`(task_type, task_id)` of this process; `(None, None)` outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """Whether this process writes the run's files (checkpoints, logs, model).

    The chief is the `chief` task if the cluster has one, else worker 0;
    single-process runs are always chief.
    """
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief
