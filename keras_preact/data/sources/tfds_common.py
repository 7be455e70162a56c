"""Reading one split that tensorflow-datasets prepared: shared by the cifar and imagenet2012 sources.

`tfds_split` shards over the input pipelines through tfds' own `ReadConfig`
when the split has enough files, element by element otherwise, and turns
tfds' "could not find data" into a `MissingDataError` that says how to
prepare the data.

>>> print(missing_message("cifar10", "train", "/data", "/data/cifar10/3.0.2"))  # doctest: +ELLIPSIS
cifar10 (train) is not prepared in the tfds data_dir '/data' (looked for '/data/cifar10/3.0.2'). ...
"""

from __future__ import annotations

from keras_preact.data import pipeline
from keras_preact.data.sources.base import MissingDataError


def missing_message(name, split, where, looked_for):
    """The generic "not prepared" message: download=True, or `tfds build`."""
    return (
        f"{name} ({split}) is not prepared in the tfds data_dir {where!r} (looked for "
        f"{looked_for!r}). Pass download=True to let tensorflow-datasets download "
        f"and prepare it (needs the internet), or prepare it elsewhere with `tfds build {name} "
        f"--data_dir=DIR` and pass data_dir=DIR."
    )


def tfds_split(
    name,
    split,
    request,
    *,
    decoders=None,
    shuffle_files=False,
    shuffle_seed=None,
    message=missing_message,
    before_download=None,
):
    """`builder.as_dataset(split)` sharded over `request.input_context`, or a `MissingDataError`.

    With `request.download`, `before_download(builder)` runs first (it may
    raise), then `builder.download_and_prepare()`. `message(name, split,
    data_dir_root, data_path)` words the error when the split is missing.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=request.data_dir)
    if request.download:
        if before_download is not None:
            before_download(builder)
        builder.download_and_prepare()
    pipelines = request.num_pipelines
    try:
        num_shards = builder.info.splits[split].num_shards
    except (KeyError, ValueError, TypeError):
        num_shards = 0  # unknown (for example under tfds.testing.mock_data)
    tfds_shards = pipelines > 1 and num_shards >= pipelines
    read_config = tfds.ReadConfig(
        shuffle_seed=shuffle_seed, input_context=request.input_context if tfds_shards else None
    )
    try:
        ds = builder.as_dataset(
            split=split, shuffle_files=shuffle_files, decoders=decoders, read_config=read_config
        )
    except AssertionError as error:  # tfds' "could not find data in ..."
        # str(): tfds' paths are epath objects, whose repr would reach the message.
        text = message(name, split, str(builder.data_dir_root), str(builder.data_path))
        raise MissingDataError(text) from error
    if pipelines > 1 and not tfds_shards:
        ds = pipeline.shard(ds, request.input_context)
    return ds
