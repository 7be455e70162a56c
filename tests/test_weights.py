"""Weights files in and out of the builders, and the mismatch errors."""

import numpy as np
import pytest

import keras_preact as kp


@pytest.fixture(scope="module")
def trained_files(tmp_path_factory):
    """A ResNet-20 with non-default weights saved as .weights.h5 and .keras."""
    import keras

    keras.utils.set_random_seed(3)
    model = kp.ResNet20V2(classes=4)
    rng = np.random.default_rng(1)
    model.set_weights(
        [w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in model.get_weights()]
    )
    folder = tmp_path_factory.mktemp("weights")
    model.save_weights(folder / "r20.weights.h5")
    model.save(folder / "r20.keras")
    images = rng.uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    return folder, model.predict(images, verbose=0), images


@pytest.mark.parametrize("filename", ["r20.weights.h5", "r20.keras"])
def test_builder_loads_saved_weights(trained_files, filename):
    folder, expected, images = trained_files
    model = kp.ResNet20V2(classes=4, weights=str(folder / filename))
    np.testing.assert_array_equal(model.predict(images, verbose=0), expected)


def test_wrong_depth_names_first_mismatching_layer(trained_files):
    folder, _, _ = trained_files
    with pytest.raises(ValueError) as error:
        kp.ResNet32V2(classes=4, weights=str(folder / "r20.weights.h5"))
    message = str(error.value)
    assert "stage1_unit4" in message
    assert "expects shape (3, 3, 16, 16), the file has (3, 3, 16, 32)" in message


def test_wrong_classes_names_the_classifier(trained_files):
    folder, _, _ = trained_files
    with pytest.raises(ValueError, match=r"'predictions'.*\(64, 10\).*\(64, 4\)"):
        kp.ResNet20V2(classes=10, weights=str(folder / "r20.keras"))


def test_deeper_file_into_shallower_model_is_refused(tmp_path):
    kp.ResNet32V2(classes=4).save_weights(tmp_path / "r32.weights.h5")
    with pytest.raises(ValueError, match="does not match model"):
        kp.ResNet20V2(classes=4, weights=str(tmp_path / "r32.weights.h5"))


def test_corrupt_files_are_reported(tmp_path):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        kp.ResNet20V2(weights=str(bad))
    archive = tmp_path / "bad.keras"
    archive.write_bytes(b"PK not a zip")
    with pytest.raises(ValueError, match="not a valid .keras archive"):
        kp.ResNet20V2(weights=str(archive))


def test_weights_file_carries_its_normalization(tmp_path, rng):
    """A model trained with another normalisation reloads it from its weights file."""
    trained = kp.ResNet20V2(classes=4, normalization="digits")
    trained.save_weights(tmp_path / "digits.weights.h5")
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    # Built with the default cifar10 normalisation; the file brings the digits one.
    loaded = kp.ResNet20V2(classes=4, weights=str(tmp_path / "digits.weights.h5"))
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), trained.predict(images, verbose=0)
    )
    mean, std = kp.preprocessing.normalization_stats("digits")
    np.testing.assert_allclose(loaded.get_layer("preprocessing").mean.numpy(), mean)
