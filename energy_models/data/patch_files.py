"""Reading patch files (`PatchSet.save`'s .npz): the whole set, or one split as an array, with one-line
errors for a missing, foreign or damaged file."""

import os
import zipfile
from pathlib import Path
from typing import Union

import numpy as np

from energy_models.data.patch_size import PATCH_SIZE, parse_patch_size, shape_label, size_setting
from energy_models.data.patches import _ARRAYS, _SHAPE_ARRAYS, PATCH_FILE_FORMAT, PatchSet
from energy_models.errors import UserError

# What to do about a missing or damaged patch file, said to a command-line user.
_RECREATE = ("re-create it with python -m train.gaussian --dataset patches --images PHOTOS (it writes "
             "RUN_DIR/patches.npz)")


def load_patch_set(path: Union[str, os.PathLike], patch_size=None, channels: int = 1) -> PatchSet:
    """Reads a patch file written by `PatchSet.save` and checks it.

    Args:
        path: the .npz file.
        patch_size: the size the caller expects, p or (h, w), with `channels`; None takes the shape the
            file records, so that the size of a model comes from its data. A file from before patch files
            recorded their shape holds p x p grayscale patches.
        channels: the channels the caller expects (with `patch_size`).

    Returns:
        The `PatchSet`.

    Raises:
        UserError: the file is missing, is not a patch file, has patches of another shape than the caller
            expects (naming both), is damaged, or holds NaN or inf.
    """
    data = _read(path)
    if not isinstance(data, dict) or str(data.get("format", "")) != PATCH_FILE_FORMAT:
        raise UserError(f"{path} is not a patch file written by this project; {_RECREATE}")
    problems = [f"no '{name}'" for name in _ARRAYS if name not in data]
    if not problems:
        try:
            recorded = (tuple(int(data[name]) for name in _SHAPE_ARRAYS) if "height" in data
                        else parse_patch_size(str(data["patch_size"])) + (1,))
        except (TypeError, ValueError, UserError):
            raise UserError(f"{path} is a damaged patch file (its patch size is unreadable); {_RECREATE}") from None
        if patch_size is not None:
            expected = parse_patch_size(patch_size) + (int(channels),)
            if expected != recorded:
                raise UserError(f"{path} holds {shape_label(*recorded)} patches ({int(np.prod(recorded))} values), "
                                f"but {shape_label(*expected)} patches ({int(np.prod(expected))} values) are "
                                f"expected; use a model of the file's size, or cut {shape_label(*expected)} "
                                f"patches from photographs (--images)")
        for split in ("train", "heldout"):
            data[split] = _checked(data[split], path, split, recorded)
            if data[f"{split}_positions"].shape != (len(data[split]), 3):
                problems.append(f"'{split}_positions' is not of shape [{len(data[split])}, 3]")
        if data["is_heldout"].shape != data["image_names"].shape:
            problems.append("'is_heldout' and 'image_names' differ in length")
    if problems:
        raise UserError(f"{path} is a damaged patch file ({problems[0]}); {_RECREATE}")
    return PatchSet(train=data["train"], heldout=data["heldout"],
                    image_names=data["image_names"].astype(str), is_heldout=data["is_heldout"].astype(bool),
                    train_positions=data["train_positions"], heldout_positions=data["heldout_positions"],
                    patch_size=size_setting(recorded[:2]), seed=int(data["seed"]), source=str(data["source"]),
                    channels=recorded[2])


def load_patch_array(path: Union[str, os.PathLike], split: str = "heldout",
                     patch_size=PATCH_SIZE, channels: int = 1) -> np.ndarray:
    """Reads patches to score: an .npy array [n, D], or one split of a patch file (.npz).

    Args:
        path: an .npy file of shape [n, D], D = h * w * channels, or an .npz written by `PatchSet.save`
            (whose recorded shape must be the expected one).
        split: for an .npz, "heldout" or "train".
        patch_size: the side p or the (h, w) the caller expects.
        channels: the channels the caller expects.

    Returns:
        float32 [n, D].

    Raises:
        UserError: missing file, not a patch array, wrong width, or NaN / inf values.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    data = _read(path)
    if isinstance(data, dict):
        return getattr(load_patch_set(path, patch_size, channels), split)
    return _checked(data, path, "the array", parse_patch_size(patch_size) + (int(channels),))


def _read(path) -> Union[np.ndarray, dict]:
    """Loads an .npy (array) or .npz (dict of arrays) without pickle, as a UserError on any failure."""
    if Path(path).is_dir():
        inside = Path(path) / "patches.npz"
        hint = f"pass {inside}" if inside.is_file() else "pass the patches.npz inside a run folder"
        raise UserError(f"patch file {path} is a folder; {hint}")
    if not Path(path).is_file():
        create = _RECREATE.replace("re-create it", "create one")
        raise UserError(f"patch file {path} does not exist; check the path, or {create}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {name: loaded[name] for name in loaded.files}
        return loaded
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{path} is not a patch file (a patches.npz of a run folder or an .npy of shape "
                        f"[n, {PATCH_SIZE ** 2}]): {str(error).splitlines()[0]}") from error


def _checked(array: np.ndarray, path, what: str, shape: tuple) -> np.ndarray:
    """`array` as float32 after checking it holds finite patches of `shape` (h, w, channels)."""
    width = int(np.prod(shape))
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise UserError(f"{what} in {path} has shape {array.shape} and dtype {array.dtype}, but float "
                        f"patches of shape [n, {width}] are expected")
    if array.shape[1] != width:
        flags = f"--patch-size {shape_label(*shape[:2])}" + (" --colour" if shape[2] == 3 else "")
        raise UserError(f"{what} in {path} has {array.shape[1]} features, but {width} "
                        f"({shape_label(*shape)} patches) are expected; re-create the file with {flags}")
    bad = array.size - int(np.isfinite(array).sum())
    if bad:
        raise UserError(f"{what} in {path} contains {bad} NaN or inf values; re-create the file "
                        "from the photographs")
    return array.astype(np.float32, copy=False)
