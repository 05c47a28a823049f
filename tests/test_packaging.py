"""The package installs (`pip install .`) and imports outside the checkout; its public names resolve, and
importing it does not import TensorFlow until a name needs it."""

import importlib.util
import shutil
import subprocess
import sys
import zipfile

import energy_models
from tests.conftest import ROOT


def test_public_names_resolve_to_the_library_objects():
    from energy_models.gaussian.mle import fit_grid_mle
    from energy_models.gaussian.model import GridGaussian

    assert energy_models.GridGaussian is GridGaussian and energy_models.fit_grid_mle is fit_grid_mle
    for name in energy_models.__all__:
        assert getattr(energy_models, name).__name__ == name
    assert set(energy_models.__all__) <= set(dir(energy_models))
    try:
        energy_models.NoSuchName
    except AttributeError as error:
        assert "NoSuchName" in str(error)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_the_wheel_installs_and_imports_outside_the_checkout(tmp_path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "energy_models", source / "energy_models",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(wheels),
                    str(source)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("energy_models-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "energy_models/gaussian/mle_newton_cg.py" in names and "energy_models/data/patches.py" in names
    assert not any(n.startswith(("tests/", "train/", "bench/")) for n in names)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    probe = ("import sys, energy_models; assert 'tensorflow' not in sys.modules; "
             "print(energy_models.__file__); print(energy_models.__version__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    path, version = out.stdout.split()
    assert path.startswith(str(target)) and version == energy_models.__version__
