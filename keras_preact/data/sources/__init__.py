"""The registry of data sources: dataset name -> `Source`. One module per source, one line each.

`make_dataset` and `dataset_info` look names up here; `DATASETS` lists the
names in registry order. To add a dataset, write `sources/<name>.py` defining
`SOURCE = Source(...)` (see `base.py` and the existing modules) and add
`<name>.SOURCE,` to the tuple below.

>>> DATASETS[:3]
('digits', 'synthetic', 'cifar10')
>>> SOURCES["tfrecord"].splits
('train', 'validation', 'val')
"""

from keras_preact.data.sources import cifar, digits, folder, imagenet2012, synthetic, tfrecord
from keras_preact.data.sources.base import DatasetInfo, MissingDataError, Source

SOURCES = {
    source.name: source
    for source in (
        digits.SOURCE,
        synthetic.SOURCE,
        cifar.CIFAR10,
        cifar.CIFAR100,
        imagenet2012.SOURCE,
        folder.SOURCE,
        tfrecord.SOURCE,
    )
}

DATASETS = tuple(SOURCES)

__all__ = ["DATASETS", "SOURCES", "DatasetInfo", "MissingDataError", "Source"]
