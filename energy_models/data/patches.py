"""Random patches of photographs (28x28 by default, any h x w, grayscale or RGB), a held-out split made of
whole images, and `PatchSet.save` (reading: `patch_files`; sizes: `patch_size`).

Positions are drawn uniformly from all valid patch positions of all images, so an H x W image receives
patches in proportion to its (H - h + 1)(W - w + 1) valid positions (h x w = patch size). The held-out split
is a set of whole images: no held-out patch overlaps a training image. A patch is flattened row-major over
[h, w] (grayscale) or [h, w, 3] (colour: the R, G, B of a pixel are adjacent), D = h w C values.
"""

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from energy_models.data.images import GrayImage, Source, load_images
from energy_models.data.memory import check_fits
from energy_models.data.patch_size import (
    PATCH_SIZE,
    _check_count,
    check_patch_memory,
    parse_patch_size,
    shape_label,
    size_setting,
)
from energy_models.errors import UserError

# Files written before patch files recorded their shape hold square grayscale patches of side patch_size.
_SHAPE_ARRAYS = ("height", "width", "channels")

# Written into every patch file so that any other .npz is recognised as "not a patch file".
PATCH_FILE_FORMAT = "energy_models.patch_set.v1"

_ARRAYS = ("train", "heldout", "image_names", "is_heldout", "train_positions", "heldout_positions",
           "patch_size", "seed", "source")


def valid_positions(shape: Sequence[int], patch_size=PATCH_SIZE) -> int:
    """Number of top-left corners at which an h x w patch fits: (H - h + 1)(W - w + 1), 0 if it does not."""
    height, width = parse_patch_size(patch_size)
    return max(shape[0] - height + 1, 0) * max(shape[1] - width + 1, 0)


def extract_patches(images: Sequence[Union[np.ndarray, GrayImage]], num_patches: int,
                    patch_size=PATCH_SIZE, seed: Union[int, np.random.SeedSequence] = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Cuts patches at uniformly random positions of a list of grayscale (or colour) images.

    Args:
        images: arrays [H, W] (or [H, W, C], or `GrayImage`s) with values in [0, 1], all of one kind.
        num_patches: number of patches n.
        patch_size: side p of square patches, or (h, w).
        seed: seed of the numpy Generator; the same seed and images give the same patches.

    Returns:
        patches: float32 [n, h * w * C], each patch flattened row-major over [h, w] or [h, w, C].
        positions: int32 [n, 3], rows (image index, top row, left column).

    Raises:
        UserError: no image is at least h x w, or num_patches is not a positive integer.

    With V_i = (H_i - h + 1)(W_i - w + 1) and V = sum_i V_i, each patch's top-left corner is drawn
    uniformly from the V positions (with replacement), so image i gets Multinomial(n, V_i / V) patches.
    The patches come out in random order, ready to be batched without shuffling.
    """
    _check_count("num_patches", num_patches)
    height, width = parse_patch_size(patch_size)
    pixels = [np.asarray(getattr(image, "pixels", image)) for image in images]
    channels = pixels[0].shape[2] if pixels and pixels[0].ndim == 3 else 1
    check_fits(num_patches, 4 * height * width * channels, 1, "--num-patches",
               f"{shape_label(height, width, channels)} float32 patches")
    counts = np.array([valid_positions(p.shape, (height, width)) for p in pixels], dtype=np.int64)
    if counts.sum() == 0:
        raise UserError(f"no image is at least {width}x{height} pixels (width x height); provide larger images")
    rng = np.random.default_rng(seed)
    flat = rng.integers(0, counts.sum(), size=num_patches)
    image = np.searchsorted(np.cumsum(counts), flat, side="right")
    offset = flat - (np.cumsum(counts) - counts)[image]
    widths = np.array([p.shape[1] - width + 1 for p in pixels], dtype=np.int64)
    rows, cols = np.divmod(offset, np.maximum(widths, 1)[image])

    patches = np.empty((num_patches, height * width * channels), dtype=np.float32)
    order = np.argsort(image, kind="stable")
    starts = np.searchsorted(image[order], np.arange(len(pixels) + 1))
    for i, array in enumerate(pixels):
        idx = order[starts[i]:starts[i + 1]]
        if idx.size:
            windows = np.lib.stride_tricks.sliding_window_view(array, (height, width), axis=(0, 1))
            cut = windows[rows[idx], cols[idx]]  # [n, h, w], or [n, C, h, w] (window axes come last)
            if cut.ndim == 4:
                cut = np.moveaxis(cut, 1, -1)  # [n, h, w, C]: a pixel's channels adjacent
            patches[idx] = cut.reshape(idx.size, -1)
    positions = np.stack([image, rows, cols], axis=1).astype(np.int32)
    return patches, positions


@dataclass(repr=False)
class PatchSet:
    """Training and held-out patches cut from disjoint sets of whole images.

    Attributes:
        train, heldout: float32 [n_train, D] and [n_heldout, D] in [0, 1], D = h * w * channels.
        image_names: names of all usable images, sorted.
        is_heldout: bool [n_images], True for the images of the held-out split.
        train_positions, heldout_positions: int32 [n, 3] rows (index into image_names, top, left).
        patch_size: the side p of square patches, or (h, w).
        channels: 1 (grayscale) or 3 (RGB, each pixel's R, G, B adjacent).
        seed, source: how the set was made.
    """

    train: np.ndarray
    heldout: np.ndarray
    image_names: np.ndarray
    is_heldout: np.ndarray
    train_positions: np.ndarray
    heldout_positions: np.ndarray
    patch_size: Union[int, tuple] = PATCH_SIZE
    seed: int = 0
    source: str = ""
    channels: int = 1

    @classmethod
    def from_rows(cls, train, heldout, patch_size=PATCH_SIZE, channels=1, seed=0, source=""):
        """A patch set of rows that were not cut from images (drawn, or a user's array): the two splits
        are named as two pseudo-images, and every position is (0, 0, 0)."""
        no_images = lambda n: np.zeros((n, 3), np.int32)  # noqa: E731
        return cls(train=train, heldout=heldout, image_names=np.array([f"{source}", f"{source} (held out)"]),
                   is_heldout=np.array([False, True]), train_positions=no_images(len(train)),
                   heldout_positions=no_images(len(heldout)), patch_size=patch_size, seed=seed, source=source,
                   channels=channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one patch."""
        return parse_patch_size(self.patch_size) + (int(self.channels),)

    @property
    def train_images(self) -> list[str]:
        return [str(n) for n in self.image_names[~self.is_heldout]]

    @property
    def heldout_images(self) -> list[str]:
        return [str(n) for n in self.image_names[self.is_heldout]]

    def __repr__(self) -> str:
        return (f"PatchSet(train={self.train.shape}, heldout={self.heldout.shape}, "
                f"images={len(self.train_images)}+{len(self.heldout_images)}, "
                f"patch shape={self.shape}, seed={self.seed}, source={self.source!r})")

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the set to an .npz file atomically (temporary file in the same folder, then os.replace).

        A reader never sees a half-written file, and a crash leaves any previous file intact.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        # The side for square patches, as every file before non-square sizes held; the shape, always.
        arrays["patch_size"] = np.asarray(size_setting(self.patch_size))
        arrays.update(zip(_SHAPE_ARRAYS, map(np.asarray, self.shape)))
        try:
            with open(temporary, "xb") as handle:
                np.savez(handle, format=np.asarray(PATCH_FILE_FORMAT), **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def make_patch_set(source: Source, num_patches: int, seed: int = 0, heldout_fraction: float = 0.2,
                   heldout_images: Union[int, Sequence[str], None] = None,
                   patch_size=PATCH_SIZE, colour: bool = False) -> PatchSet:
    """Loads photographs, holds out whole images, and cuts training and held-out patches.

    Args:
        source: a folder, glob pattern, image file or list of files (see `images.find_image_files`).
        num_patches: total number of patches N, training plus held-out.
        seed: seeds the choice of held-out images and both patch draws (independent streams).
        heldout_fraction: share f of the images held out, used when heldout_images is None.
        heldout_images: a number k of images to hold out, or the names of the images to hold out.
        patch_size: side p of square patches, or (h, w).
        colour: keep R, G, B (patches of h * w * 3 values) instead of grayscale.

    Returns:
        A `PatchSet`.

    Raises:
        UserError: bad source, no usable image, a bad count or fraction, unknown held-out names, or too
            few images to hold some out while keeping one for training.

    Images are sorted by name and k = round(f * n_images) of them (at least 1 when f > 0) are chosen at
    random with the seed, so the split depends only on the seed and the set of image names. The N patches
    are divided between the splits in proportion to their valid positions,
        N_heldout = round(N * V_heldout / (V_train + V_heldout)),  N_train = N - N_heldout,
    so both splits are sampled at the same density, as if the N positions were drawn from all images.
    """
    _check_count("num_patches", num_patches)
    height, width = parse_patch_size(patch_size)
    channels = 3 if colour else 1
    check_patch_memory(num_patches, (height, width), channels)
    images = load_images(source, min_size=(height, width), colour=colour)
    names = np.array([image.name for image in images])
    # Independent streams: changing the number of patches never changes which images are held out.
    split_seed, train_seed, heldout_seed = np.random.SeedSequence(seed).spawn(3)
    heldout = _choose_heldout(names, heldout_fraction, heldout_images, split_seed)
    counts = np.array([valid_positions(image.pixels.shape, (height, width)) for image in images])
    num_heldout = int(round(num_patches * counts[heldout].sum() / counts.sum()))
    if num_heldout > num_patches - num_heldout:
        raise UserError(f"the held-out split ({num_heldout} patches from {int(heldout.sum())} image(s)) would "
                        f"be larger than the training split ({num_patches - num_heldout} patches from "
                        f"{int((~heldout).sum())} image(s)); lower --heldout-fraction (now {heldout_fraction:g}) "
                        f"or add images")
    splits = {}
    for key, mask, count, stream in (("train", ~heldout, num_patches - num_heldout, train_seed),
                                     ("heldout", heldout, num_heldout, heldout_seed)):
        members = np.flatnonzero(mask)
        if count == 0 or members.size == 0:
            splits[key] = (np.zeros((0, height * width * channels), np.float32), np.zeros((0, 3), np.int32))
            continue
        patches, positions = extract_patches([images[i] for i in members], count, (height, width), stream)
        positions[:, 0] = members[positions[:, 0]]  # index into the full list of images
        splits[key] = (patches, positions)
    return PatchSet(train=splits["train"][0], heldout=splits["heldout"][0], image_names=names,
                    is_heldout=heldout, train_positions=splits["train"][1],
                    heldout_positions=splits["heldout"][1], patch_size=size_setting((height, width)), seed=seed,
                    source=str(source), channels=channels)


def _choose_heldout(names: np.ndarray, fraction: float, heldout_images, seed) -> np.ndarray:
    count = len(names)
    if heldout_images is not None and not isinstance(heldout_images, (int, np.integer)):
        wanted = [str(n) for n in heldout_images]
        unknown = sorted(set(wanted) - set(names.tolist()))
        if unknown:
            raise UserError(f"held-out image {unknown[0]} is not among the {count} usable images; "
                            "give names relative to the source, e.g. " + str(names[0]))
        mask = np.isin(names, wanted)
        k = int(mask.sum())
    else:
        if heldout_images is None:
            if not 0.0 <= fraction < 1.0:
                raise UserError(f"heldout_fraction must be in [0, 1), got {fraction}; pass e.g. 0.2")
            k = int(np.floor(fraction * count + 0.5))
            k = max(k, 1) if fraction > 0 else 0
        else:
            k = int(heldout_images)
            if k < 0:
                raise UserError(f"heldout_images must be >= 0, got {k}; pass e.g. 5")
        mask = np.zeros(count, dtype=bool)
        mask[np.random.default_rng(seed).permutation(count)[:k]] = True
    if k >= count:
        raise UserError(f"cannot hold out {k} of {count} usable images and keep one for training; "
                        "add images or hold out fewer")
    return mask
