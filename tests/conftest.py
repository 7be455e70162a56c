"""Shared test setup: quiet TensorFlow, seeded randomness, small shared fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Files the tests read (and the script that made them), not test modules: pytest's
# --doctest-modules would import make_files.py and run it.
collect_ignore_glob = ["data/*"]


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _randomize_batchnorm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0.0, 0.2, beta.shape),
                    rng.normal(0.0, 0.2, mean.shape),
                    rng.uniform(0.5, 2.0, var.shape),
                ]
            )
    return model


@pytest.fixture
def randomize_batchnorm():
    """Gives every BatchNormalization random gamma/beta/moving stats, so checks can fail."""
    return _randomize_batchnorm


# ------------------------------------------------- export: one tiny classifier, exported once
#
# A CIFAR-style ResNet-8 (width 8, 1,000 classes, any H/W) has its classifier
# briefly fitted so outputs are peaked (top-1 comparisons mean something),
# saved as `.keras` and exported once for the session. References are the
# Keras model reloaded from that file, run on `eval_crop` crops of real photos
# that scikit-learn and scikit-image ship (JPEG, PNG, GIF, plus a BMP made here).


@pytest.fixture(scope="session")
def photos():
    import io

    from PIL import Image

    from keras_preact.export.verify import sample_images

    images = sample_images()
    assert len(images) >= 10, "scikit-learn/scikit-image sample photos are missing"
    png = dict(images)["chelsea.png"]
    bmp = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(bmp, "BMP")
    return images + [("chelsea.bmp", bmp.getvalue())]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, photos):
    """(model.keras path, reloaded Keras model, eval crops of the photos)."""
    from export_helpers import tiny_model

    from keras_preact.export.verify import eval_crops

    model = tiny_model()
    crops = eval_crops(photos, 224)
    # Only the classifier is fitted (each photo to its own class), so outputs are
    # peaked and varied. Training the convolutions here would hit a TF 2.21 oneDNN
    # crash (filter gradient of a strided 1x1 conv; see the export report).
    for layer in model.layers:
        layer.trainable = layer.name == "predictions"
    targets = (np.arange(len(crops)) * 73) % 1000
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit(crops, targets, epochs=60, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("run") / "model.keras"
    model.save(path)
    return path, keras.models.load_model(path, compile=False), crops


@pytest.fixture(scope="session")
def exported(tmp_path_factory, trained, photos):
    from keras_preact.export import onnx_export
    from keras_preact.export.pipeline import export_all

    path, _, _ = trained
    out = tmp_path_factory.mktemp("exported")
    return export_all(
        str(path), str(out), model_name="tiny", images=photos, onnx=onnx_export.available()
    )
