"""Shared fixtures: quiet TensorFlow, real-data locations from the environment (set by .ci/run)."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tfds_data_dir():
    """The prepared TFDS folder named by $TFDS_DATA_DIR (CI points it at ../shared), else skip."""
    path = os.environ.get("TFDS_DATA_DIR")
    if not path or not (pathlib.Path(path) / "mnist").is_dir():
        pytest.skip("TFDS_DATA_DIR with a prepared MNIST is not set")
    return path


def checkpoint_arrays(path):
    """{name: array} of every dataset in a Keras weights file (a checkpoint of `energy_models.checkpoints`)."""
    import h5py

    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                     else None)
    return out
