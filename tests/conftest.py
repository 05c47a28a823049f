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
    """{name: array} of every dataset in a Keras weights file (a checkpoint of `energy_models.training.checkpoints`)."""
    import h5py

    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                     else None)
    return out


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, read_only=False) -> a fresh tmpfs folder under tmp_path: a real full or read-only file
    system for write-failure tests. Running as root, a chmod'ed folder is still writable, so a mount is
    the only honest read-only folder; skipped where mounting is not allowed (the monkeypatched tests
    beside these still run)."""
    import subprocess

    mounted = []

    def mount(size, read_only=False):
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                capture_output=True)
        if result.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`: to assert that nothing there changed."""
    folder = pathlib.Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tensorboard_tags(run_dir):
    """{(tag, step)} of every summary in the TensorBoard event files under `run_dir`."""
    import pathlib

    import tensorflow as tf

    tags = set()
    for path in pathlib.Path(run_dir).rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update((value.tag, event.step) for value in event.summary.value)
    return tags
