"""Find photographs and load them as grayscale float images in [0, 1].

A source is a folder (searched recursively), a glob pattern, a single image file, or a list of files.
Every format Pillow decodes (JPEG, PNG, TIFF, BMP, WebP, ...) and every common mode (L, I;16, I, RGB,
RGBA, P, CMYK, LA) is read. Files that cannot be used are skipped with a `SkippedImageWarning` naming
the file and the reason; a source with nothing usable raises `UserError`.

Grayscale follows ITU-R BT.601 luma, computed in float from the colour values (not Pillow's integer "L"
conversion, which rounds to 8 bits):

    Y = (0.299 R + 0.587 G + 0.114 B) / 255          (8-bit channels)
    Y = v / 65535                                     (16-bit grayscale)

so Y lies in [0, 1]. Alpha is ignored: the colour channels are used as they are stored.

In colour (`load_images(..., colour=True)`), each pixel keeps its three channels (R, G, B) / 255 (v / 65535
for 16-bit), as float32 [H, W, 3]; a grayscale file gives R = G = B = its gray value.
"""

import glob
import importlib.util
import os
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import numpy as np
from PIL import Image, ImageOps

from energy_models.errors import UserError

# Suffixes looked for when a folder is searched. A glob pattern, a single file or an explicit list is
# tried whatever its suffix, so users can point at oddly named files on purpose.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

LUMA_WEIGHTS = (0.299, 0.587, 0.114)

MIN_SIZE = 28

# Natural photographs bundled inside the scikit-image wheel (skimage/data/, no download needed), with the
# licence stated in each skimage.data docstring. Left out: moon (no licence stated), hubble_deep_field
# (mostly black sky), motorcycle_left (no licence stated), and the non-photographs (text, page, horse...).
DEFAULT_IMAGES = (
    ("astronaut.png", "public domain (NASA, Eileen Collins portrait)"),
    ("brick.png", "CC0 (CC0Textures Bricks25, warped and cropped by scikit-image)"),
    ("camera.png", "CC0 (photographer Lav Varshney)"),
    ("chelsea.png", "CC0 (photographer Stefan van der Walt)"),
    ("coffee.png", "CC0 (photographer Rachel Michetti)"),
    ("coins.png", "no known copyright restrictions (Brooklyn Museum collection)"),
    ("grass.png", "CC0 (DeviantArt linolafett Grass-01, cropped by scikit-image)"),
    ("gravel.png", "CC0 (CC0Textures Gravel04, cropped by scikit-image)"),
    ("rocket.jpg", "public domain (SpaceX, DSCOVR launch)"),
)

Source = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


class SkippedImageWarning(UserWarning):
    """An image file of a source could not be used (unreadable, truncated, too small)."""


class GrayImage(NamedTuple):
    """One loaded photograph: `name` (path relative to the source) and float32 `pixels` [H, W] in [0, 1]
    ([H, W, 3] when loaded in colour)."""

    name: str
    pixels: np.ndarray


def find_image_files(source: Source) -> list[tuple[str, Path]]:
    """Lists the image files of a source, sorted by name.

    Args:
        source: a folder (searched recursively; hidden files and folders are skipped), a glob pattern
            (`**` recurses), an image file, or a list of image files.

    Returns:
        A list of (name, path) sorted by name. For a folder, names are paths relative to it (with `/`);
        otherwise relative to the deepest folder holding all the files. Sorting makes every later random
        choice (splits, patch positions) depend only on the seed and the set of files.

    Raises:
        UserError: the source does not exist, a pattern matches nothing, or a folder holds no image files.
    """
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"image file {missing[0]} does not exist; check the path")
        if not paths:
            raise UserError("the list of image files is empty; pass at least one image file")
        return _named(paths, root=None)
    path = Path(source)
    if path.is_dir():
        files = []
        for folder, subfolders, names in os.walk(path):
            # Hidden entries are editor, OS or notebook droppings (.DS_Store, ._x.jpg, .ipynb_checkpoints).
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            files += [Path(folder, n) for n in names
                      if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)]
        if not files:
            raise UserError(f"found no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {source}; "
                            "put photographs there or pass another folder")
        return _named(files, root=path)
    if path.is_file():
        return _named([path], root=None)
    if glob.has_magic(str(source)):
        files = [Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file()]
        if not files:
            raise UserError(f"image pattern {source} matches no files; check the pattern and quote it "
                            "in the shell")
        return _named(files, root=None)
    raise UserError(f"image source {source} does not exist; pass a folder, a glob pattern such as "
                    "'photos/*.jpg', or an image file")


def _named(paths: list[Path], root: Path | None) -> list[tuple[str, Path]]:
    if root is None:
        root = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
        paths = [p.resolve() for p in paths]
    named = {p.relative_to(root).as_posix(): p for p in paths}
    return sorted(named.items())


def read_grayscale(path: Union[str, os.PathLike]) -> np.ndarray:
    """Reads one image file as float32 luma in [0, 1].

    Args:
        path: an image file Pillow can decode.

    Returns:
        float32 array [H, W] in [0, 1], in display orientation (EXIF rotation applied).

    Raises:
        OSError, ValueError, Image.DecompressionBombError: the file is not a readable image (not an
            image, truncated, unsupported mode). `load_images` turns these into skip warnings.

    Mode handling: L, 1 -> v / 255; I;16* -> v / 65535; I (32-bit) -> v / 65535 when 0 <= v <= 65535;
    P, PA -> palette colours; CMYK, YCbCr, LAB, HSV -> RGB through Pillow; RGBA, LA, PA -> alpha dropped;
    RGB(A) -> (0.299 R + 0.587 G + 0.114 B) / 255 in float64.
    """
    gray, rgb = _decode(path)
    if gray is not None:
        return gray
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    luma = LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b
    return (luma / 255.0).astype(np.float32)


def read_colour(path: Union[str, os.PathLike]) -> np.ndarray:
    """Reads one image file as float32 RGB [H, W, 3] in [0, 1]: (R, G, B) / 255, or a grayscale file's value
    in all three channels. Modes and errors as `read_grayscale`."""
    gray, rgb = _decode(path)
    if gray is not None:
        return np.repeat(gray[..., None], 3, axis=-1)
    return (rgb.astype(np.float64) / 255.0).astype(np.float32)


def _decode(path):
    """(gray float32 [H, W] in [0, 1], None) for grayscale modes, or (None, uint8 RGB [H, W, 3])."""
    with Image.open(path) as image:
        image.load()  # decode now: truncated files fail here, not later
        image = ImageOps.exif_transpose(image)
        mode = image.mode
        if mode in ("L", "LA", "1"):
            gray = np.asarray(image.getchannel(0) if mode == "LA" else image.convert("L"))
            return (gray.astype(np.float64) / 255.0).astype(np.float32), None
        if mode.startswith("I;16") or mode == "I":
            values = np.asarray(image).astype(np.float64)
            if mode == "I" and (values.min(initial=0) < 0 or values.max(initial=0) > 65535):
                raise ValueError("32-bit integer values outside 0..65535 are not supported")
            return (values / 65535.0).astype(np.float32), None
        if mode in ("RGB", "RGBA"):
            rgb = np.asarray(image)[..., :3]
        elif mode in ("P", "PA"):
            # Through RGBA so palette transparency never triggers Pillow's conversion warning.
            rgb = np.asarray(image.convert("RGBA"))[..., :3]
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            rgb = np.asarray(image.convert("RGB"))
        else:
            raise ValueError(f"image mode {mode} is not supported")
    return None, rgb


def load_images(source: Source, min_size: Union[int, tuple] = MIN_SIZE, colour: bool = False) -> list[GrayImage]:
    """Loads every usable photograph of a source as grayscale (or in colour).

    Args:
        source: see `find_image_files`.
        min_size: images with height or width below this are skipped (a 28x28 patch must fit); a pair
            (height, width) for non-square patches.
        colour: keep R, G, B (`read_colour`, pixels [H, W, 3]) instead of luma.

    Returns:
        A list of `GrayImage`, sorted by name.

    Raises:
        UserError: the source does not exist or no usable image remains.

    Warns:
        SkippedImageWarning: once per skipped file, naming it and why (not an image, truncated, too small).
    """
    min_height, min_width = (min_size, min_size) if np.ndim(min_size) == 0 else tuple(min_size)
    images, skipped = [], []
    for name, path in find_image_files(source):
        try:
            pixels = read_colour(path) if colour else read_grayscale(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            skipped.append(name)
            warnings.warn(f"skipping {path}: not a readable image ({error})", SkippedImageWarning,
                          stacklevel=2)
            continue
        if pixels.shape[0] < min_height or pixels.shape[1] < min_width:
            skipped.append(name)
            # Width x height, as image viewers and file managers give sizes.
            warnings.warn(f"skipping {path}: {pixels.shape[1]}x{pixels.shape[0]} pixels (width x height) is "
                          f"smaller than {min_width}x{min_height}", SkippedImageWarning, stacklevel=2)
            continue
        images.append(GrayImage(name, pixels))
    if not images:
        raise UserError(f"no usable image in {_describe(source)} ({len(skipped)} skipped, see warnings); "
                        f"provide photographs at least {min_width}x{min_height} pixels (width x height) that "
                        f"Pillow can read")
    return images


def _describe(source: Source) -> str:
    if isinstance(source, (list, tuple)):
        return f"the list of {len(source)} files"
    return str(source)


def default_image_source() -> list[Path]:
    """Returns the bundled scikit-image photographs (`DEFAULT_IMAGES`) that are present on this machine.

    The files are read from the installed package folder `skimage/data/` directly, never through
    `skimage.data.<name>()`, which may try to download files that are not bundled.

    Returns:
        A list of paths, usable as a source by `load_images`.

    Raises:
        UserError: scikit-image is not installed or none of the files is present.
    """
    spec = importlib.util.find_spec("skimage")
    folder = Path(spec.submodule_search_locations[0], "data") if spec else None
    paths = [Path(folder, name) for name, _ in DEFAULT_IMAGES] if folder else []
    present = [p for p in paths if p.is_file()]
    if not present:
        raise UserError("the default photographs of scikit-image are not installed; install "
                        "scikit-image (see requirements.txt) or pass a folder of photographs")
    return present
