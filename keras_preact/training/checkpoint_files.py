"""The checkpoint folder after a fault: unreadable checkpoints set aside, a failed save's files removed.

`tf.train.CheckpointManager` writes `ckpt-<step>.index` and
`ckpt-<step>.data-*` through a temporary `ckpt-<step>_temp/` folder, and lists
the checkpoints it keeps in the `checkpoint` state file. A crash or a full
disk can leave a checkpoint whose files are cut short (the newest, usually)
or a save's temporary files; these helpers let `Trainer` go on from there:

* `unreadable_reason(prefix)`: why a checkpoint cannot be read back (every
  tensor is read), or None when it can; an error of the storage or the
  machine (`TRANSIENT_ERRORS`) is raised instead, so that a whole checkpoint
  is never set aside for it.
* `set_aside(prefix, folder)`: moves a checkpoint's files into
  `<checkpoints>/unreadable/` (never deleted: a person may want them) and
  `keep_only(folder, prefixes)` rewrites the state file without it.
* `remove_partial_save(folder, step)`: removes what a failed save of `step` left.

>>> checkpoint_step("/runs/a/checkpoints/ckpt-60")
60
"""

from __future__ import annotations

import os
import re

import tensorflow as tf

UNREADABLE = "unreadable"
STATE_FILE = "checkpoint"
_STEP = re.compile(r"ckpt-(\d+)$")


def checkpoint_step(prefix):
    """The step in a checkpoint's prefix (`.../ckpt-60` -> 60), or None."""
    match = _STEP.search(os.fspath(prefix))
    return int(match.group(1)) if match else None


def checkpoints_newest_first(folder):
    """The checkpoint prefixes in `folder`: the state file's list, else the `ckpt-*.index` files."""
    state = tf.train.get_checkpoint_state(folder)
    prefixes = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and state.model_checkpoint_path not in prefixes:
        prefixes.append(state.model_checkpoint_path)
    if not prefixes:  # no state file, or an unreadable one
        indexes = tf.io.gfile.glob(os.path.join(folder, "ckpt-*.index"))
        prefixes = [path[: -len(".index")] for path in indexes]
    numbered = [p for p in prefixes if checkpoint_step(p) is not None]
    return sorted(numbered, key=checkpoint_step, reverse=True)


# Errors of reading a checkpoint that say nothing about its files: the storage or the
# machine failed this time (gs:// unavailable or refusing, out of memory, cancelled).
# They are raised as they are, never taken for an unreadable checkpoint.
TRANSIENT_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.PermissionDeniedError,
    tf.errors.UnauthenticatedError,
    tf.errors.DeadlineExceededError,
    tf.errors.ResourceExhaustedError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    MemoryError,
)


def unreadable_reason(prefix):
    """Why the checkpoint at `prefix` cannot be read (one line), or None if all of it reads back.

    A `TRANSIENT_ERRORS` error is raised, not given as a reason.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:  # IndexError, DataLossError, NotFoundError, ...: any failure
        # The checkpoint reader turns every storage error into DataLoss or Unknown; reading
        # the files through tf.io.gfile raises the storage's own error, if it has one.
        _raise_transient(prefix)
        text = getattr(error, "message", None) or str(error) or type(error).__name__
        return text.strip().splitlines()[0]
    return None


def _raise_transient(prefix):
    """Reads the first byte of each of the checkpoint's files; raises a `TRANSIENT_ERRORS`
    error if one comes (any other error is the checkpoint's, left to the reader's reason)."""
    try:
        for path in tf.io.gfile.glob(f"{prefix}.*"):
            with tf.io.gfile.GFile(path, "rb") as f:
                f.read(1)
    except TRANSIENT_ERRORS:
        raise
    except Exception:  # a missing or broken file: the reader's reason says so
        pass


def set_aside(prefix, folder):
    """Moves the files of the checkpoint at `prefix` into `<folder>/unreadable/`; returns that folder.

    A name already taken there (an earlier set-aside checkpoint of the same
    step) gets a number: `ckpt-60.index.1`.
    """
    destination = os.path.join(folder, UNREADABLE)
    tf.io.gfile.makedirs(destination)
    for path in tf.io.gfile.glob(f"{prefix}.*"):
        target = os.path.join(destination, os.path.basename(path))
        number = 0
        while tf.io.gfile.exists(target):
            number += 1
            target = os.path.join(destination, f"{os.path.basename(path)}.{number}")
        tf.io.gfile.rename(path, target)
    return destination


def keep_only(folder, prefixes):
    """Rewrites `folder`'s state file to list `prefixes` (oldest first), or sets it aside if none."""
    state = os.path.join(folder, STATE_FILE)
    if prefixes:
        names = [os.path.basename(prefix) for prefix in prefixes]  # relative, as TF writes them
        tf.compat.v1.train.update_checkpoint_state(
            folder,
            model_checkpoint_path=names[-1],
            all_model_checkpoint_paths=names,
        )
    elif tf.io.gfile.exists(state):
        destination = os.path.join(folder, UNREADABLE)
        tf.io.gfile.makedirs(destination)
        tf.io.gfile.rename(state, os.path.join(destination, STATE_FILE), overwrite=True)


def remove_partial_save(folder, step):
    """Removes what a failed save of `step` left in `folder`: its temporary folder and files,
    its own files (the state file does not list them) and the state file's temporary copy."""
    prefix = os.path.join(folder, f"ckpt-{step}")
    patterns = (f"{prefix}_temp*", f"{prefix}.*", os.path.join(folder, f"{STATE_FILE}.tmp*"))
    for pattern in patterns:
        for path in tf.io.gfile.glob(pattern):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)


def leftovers(folder):
    """Names in `folder` that a save leaves only when it fails (temporary folders and files)."""
    if not tf.io.gfile.isdir(folder):
        return []
    return sorted(
        name
        for name in tf.io.gfile.listdir(folder)
        if "_temp" in name or ".tmp" in name or name.startswith(".tmp")
    )
