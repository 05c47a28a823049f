"""Tests for loading photographs, cutting patches, the held-out split and patch files."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from energy_models.data.images import (
    DEFAULT_IMAGES,
    SkippedImageWarning,
    default_image_source,
    find_image_files,
    load_images,
    read_grayscale,
)
from energy_models.data.patch_files import load_patch_array, load_patch_set
from energy_models.data.patches import PatchSet, extract_patches, make_patch_set, valid_positions
from energy_models.errors import UserError

RNG = np.random.default_rng(1234)
RGB = RNG.integers(0, 256, size=(31, 40, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, size=(31, 40), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, size=(31, 40), dtype=np.uint16)


def luma(rgb):
    """Independent BT.601 luma in float64: (0.299 R + 0.587 G + 0.114 B) / 255."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255


def write_image(path, array, mode=None, **save_args):
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path, **save_args)
    return path


def palette_case(path):
    palette = RNG.integers(0, 256, size=(256, 3), dtype=np.uint8)
    index = RNG.integers(0, 256, size=(31, 40), dtype=np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(palette.ravel().tolist())
    image.save(path, transparency=3)
    return luma(palette[index])


def decoded_luma(path):
    """Expected values of lossy files: luma of what Pillow decodes to RGB."""
    with Image.open(path) as image:
        return luma(np.asarray(image.convert("RGB")))


CASES = {
    "L.png": lambda p: (write_image(p, RGB[..., 0]), RGB[..., 0] / 255)[1],
    "L.bmp": lambda p: (write_image(p, RGB[..., 0]), RGB[..., 0] / 255)[1],
    "I16.png": lambda p: (write_image(p, GRAY16), GRAY16 / 65535)[1],
    "I16.tif": lambda p: (write_image(p, GRAY16), GRAY16 / 65535)[1],
    "I32.tif": lambda p: (write_image(p, GRAY16.astype(np.int32)), GRAY16 / 65535)[1],
    "RGB.png": lambda p: (write_image(p, RGB), luma(RGB))[1],
    "RGB.tif": lambda p: (write_image(p, RGB), luma(RGB))[1],
    "RGB.bmp": lambda p: (write_image(p, RGB), luma(RGB))[1],
    "RGB.webp": lambda p: (write_image(p, RGB, lossless=True), luma(RGB))[1],
    "RGBA.png": lambda p: (write_image(p, np.dstack([RGB, ALPHA]), "RGBA"), luma(RGB))[1],
    "LA.png": lambda p: (write_image(p, np.dstack([RGB[..., 1], ALPHA]), "LA"), RGB[..., 1] / 255)[1],
    "P.png": palette_case,
    "RGB.jpg": lambda p: (write_image(p, RGB, quality=90), decoded_luma(p))[1],
    "CMYK.jpg": lambda p: (Image.fromarray(RGB).convert("CMYK").save(p), decoded_luma(p))[1],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_mode_and_format_loads_as_luma(tmp_path, name):
    path = tmp_path / name
    expected = CASES[name](path)
    pixels = read_grayscale(path)
    assert pixels.dtype == np.float32 and pixels.shape == (31, 40)
    # float32 rounding of a value in [0, 1] is at most 2^-24 ~ 6e-8.
    np.testing.assert_allclose(pixels, expected, rtol=0, atol=1e-7)


def test_luma_is_float_not_pillow_integer_rounding(tmp_path):
    path = write_image(tmp_path / "x.png", RGB)
    pillow_l = np.asarray(Image.open(path).convert("L")) / 255
    assert np.abs(read_grayscale(path) - pillow_l).max() > 1e-4


def test_sources_folder_glob_file_and_list(tmp_path):
    for relative in ("b.png", "sub/a.jpg", "sub/deeper/c.tif", ".hidden.png", "notes.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith(".txt"):
            (tmp_path / relative).write_text("not an image")
        else:
            write_image(tmp_path / relative, RGB)
    names = [name for name, _ in find_image_files(tmp_path)]
    assert names == ["b.png", "sub/a.jpg", "sub/deeper/c.tif"]
    assert [n for n, _ in find_image_files(str(tmp_path / "**" / "*.png"))] == ["b.png"]
    assert [n for n, _ in find_image_files(tmp_path / "sub" / "a.jpg")] == ["a.jpg"]
    listed = [tmp_path / "sub/deeper/c.tif", tmp_path / "sub/a.jpg"]
    assert [n for n, _ in find_image_files(listed)] == ["a.jpg", "deeper/c.tif"]


@pytest.mark.parametrize("source, match", [
    ("missing_folder", "image source .*missing_folder does not exist"),
    ("*.nothing", "matches no files"),
])
def test_missing_sources_raise(tmp_path, source, match):
    with pytest.raises(UserError, match=match):
        load_images(str(tmp_path / source))


def test_folder_without_images_raises(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(UserError, match="found no image files .* in folder"):
        load_images(tmp_path)


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path):
    good = write_image(tmp_path / "good.png", RGB[..., 0].repeat(2, 0))
    (tmp_path / "text.png").write_text("this is not an image")
    full = write_image(tmp_path / "full.png", RGB).read_bytes()
    (tmp_path / "truncated.png").write_bytes(full[:len(full) // 2])
    write_image(tmp_path / "small.png", RGB[:20, :30])
    with pytest.warns(SkippedImageWarning) as record:
        loaded = load_images(tmp_path)
    assert [image.name for image in loaded] == ["full.png", "good.png"] and good.exists()
    messages = " | ".join(str(w.message) for w in record)
    assert "text.png: not a readable image" in messages
    assert "truncated.png: not a readable image" in messages
    assert "small.png: 30x20 pixels (width x height) is smaller than 28x28" in messages


def test_nothing_usable_raises_after_warnings(tmp_path):
    (tmp_path / "a.jpg").write_text("not a jpeg")
    write_image(tmp_path / "tiny.png", RGB[:10, :10])
    with pytest.warns(SkippedImageWarning) as record, pytest.raises(
            UserError, match=r"no usable image in .* \(2 skipped, see warnings\)"):
        load_images(tmp_path)
    assert sorted(Path(str(w.message).split(":")[0].split()[-1]).name for w in record) == [
        "a.jpg", "tiny.png"]


def make_photos(folder, shapes):
    folder.mkdir(exist_ok=True)
    for i, shape in enumerate(shapes):
        write_image(folder / f"img{i:02d}.png", RNG.integers(0, 256, size=shape, dtype=np.uint8))
    return folder


def test_extract_shape_range_crops_and_determinism(tmp_path):
    loaded = load_images(make_photos(tmp_path / "p", [(40, 50), (64, 33, 3), (28, 28)]))
    patches, positions = extract_patches(loaded, 500, seed=7)
    assert patches.shape == (500, 784) and patches.dtype == np.float32
    assert patches.min() >= 0 and patches.max() <= 1
    for k in range(0, 500, 37):
        i, row, col = positions[k]
        np.testing.assert_array_equal(patches[k], loaded[i].pixels[row:row + 28, col:col + 28].ravel())
    again, positions_again = extract_patches(loaded, 500, seed=7)
    np.testing.assert_array_equal(again, patches)
    np.testing.assert_array_equal(positions_again, positions)
    assert not np.array_equal(extract_patches(loaded, 500, seed=8)[1], positions)


def test_positions_are_uniform_over_all_valid_positions():
    shapes = [(28, 28), (37, 46), (127, 227), (60, 90)]
    counts = np.array([valid_positions(s) for s in shapes], dtype=float)
    n = 40_000
    _, positions = extract_patches([np.zeros(s, np.float32) for s in shapes], n, seed=3)
    # Image counts are Multinomial(n, V_i / V): each within 5 standard deviations of n V_i / V.
    share = counts / counts.sum()
    observed = np.bincount(positions[:, 0], minlength=len(shapes))
    assert np.all(np.abs(observed - n * share) <= 5 * np.sqrt(n * share * (1 - share)) + 1)
    # Within the largest image, rows and columns are uniform on 0..H-28 and 0..W-28.
    inside = positions[positions[:, 0] == 2]
    for axis, size in ((1, 127 - 27), (2, 227 - 27)):
        mean, std = (size - 1) / 2, np.sqrt((size ** 2 - 1) / 12)
        assert abs(inside[:, axis].mean() - mean) <= 5 * std / np.sqrt(len(inside))
        assert inside[:, axis].min() >= 0 and inside[:, axis].max() <= size - 1


def test_heldout_split_is_whole_images_and_proportional(tmp_path):
    folder = make_photos(tmp_path / "p", [(40 + 3 * i, 50 + i) for i in range(10)])
    patch_set = make_patch_set(folder, 3000, seed=5, heldout_fraction=0.2)
    assert len(patch_set.heldout_images) == 2 and len(patch_set.train_images) == 8
    assert set(patch_set.heldout_images).isdisjoint(patch_set.train_images)
    assert not patch_set.is_heldout[patch_set.train_positions[:, 0]].any()
    assert patch_set.is_heldout[patch_set.heldout_positions[:, 0]].all()
    counts = np.array([valid_positions((40 + 3 * i, 50 + i)) for i in range(10)])
    expected = round(3000 * counts[patch_set.is_heldout].sum() / counts.sum())
    assert len(patch_set.heldout) == expected and len(patch_set.train) == 3000 - expected
    same = make_patch_set(folder, 100, seed=5, heldout_fraction=0.2)
    assert same.heldout_images == patch_set.heldout_images  # split independent of the patch count
    chosen = make_patch_set(folder, 100, seed=5, heldout_images=["img03.png"])
    assert chosen.heldout_images == ["img03.png"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_patches=0), "num_patches must be a positive whole number, got 0"),
    (dict(num_patches=10, heldout_fraction=1.0), r"heldout_fraction must be in \[0, 1\), got 1.0"),
    (dict(num_patches=10, heldout_images=2), "cannot hold out 2 of 2 usable images"),
    (dict(num_patches=10, heldout_fraction=0.5, heldout_images=["img01.png"]),
     r"the held-out split \(6 patches from 1 image\(s\)\) would be larger than the training split \(4 patches "
     r"from 1 image\(s\)\); lower --heldout-fraction \(now 0.5\) or add images"),
    (dict(num_patches=10, heldout_images=["nope.png"]), "held-out image nope.png is not among"),
])
def test_bad_patch_set_arguments_raise(tmp_path, kwargs, match):
    folder = make_photos(tmp_path / "p", [(30, 30), (30, 31)])
    with pytest.raises(UserError, match=match):
        make_patch_set(folder, **kwargs)


def test_patch_file_round_trip_is_atomic(tmp_path):
    patch_set = make_patch_set(make_photos(tmp_path / "p", [(40, 50), (50, 40), (45, 45)]), 200, seed=2,
                               heldout_images=1)
    path = tmp_path / "out" / "patches.npz"
    patch_set.save(path)
    patch_set.save(path)  # overwriting goes through os.replace too
    assert os.listdir(path.parent) == ["patches.npz"]
    loaded = load_patch_set(path)
    for field in ("train", "heldout", "image_names", "is_heldout", "train_positions", "heldout_positions"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(patch_set, field))
    assert (loaded.seed, loaded.patch_size, loaded.source) == (2, 28, patch_set.source)
    np.testing.assert_array_equal(load_patch_array(path), patch_set.heldout)
    np.save(tmp_path / "scores.npy", patch_set.train)
    np.testing.assert_array_equal(load_patch_array(tmp_path / "scores.npy"), patch_set.train)


def broken_files(tmp_path):
    good = np.random.default_rng(0).random((5, 784)).astype(np.float32)
    nan = good.copy()
    nan[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "narrow.npy", good[:, :100])
    np.save(tmp_path / "ints.npy", (good * 255).astype(np.uint8))
    np.savez(tmp_path / "other.npz", x=good)
    (tmp_path / "text.npz").write_text("hello")
    patch_set = PatchSet(train=good, heldout=nan, image_names=np.array(["a"]), is_heldout=np.array([0]),
                         train_positions=np.zeros((5, 3), np.int32),
                         heldout_positions=np.zeros((5, 3), np.int32))
    patch_set.save(tmp_path / "nan.npz")
    patch_set.heldout, patch_set.heldout_positions = good, np.zeros((4, 3), np.int32)
    patch_set.save(tmp_path / "damaged.npz")


@pytest.mark.parametrize("name, match", [
    ("missing.npz", "patch file .*missing.npz does not exist"),
    ("nan.npy", "the array in .*nan.npy contains 1 NaN or inf values"),
    ("nan.npz", "heldout in .*nan.npz contains 1 NaN or inf values"),
    ("narrow.npy", "has 100 features, but 784 .28x28 patches. are expected"),
    ("ints.npy", "dtype uint8, but float patches of shape"),
    ("other.npz", "other.npz is not a patch file written by this project; re-create it with python -m "
                  "train.gaussian --dataset patches --images PHOTOS"),
    ("folder", r"patch file .*folder is a folder; pass .*folder/patches.npz$"),
    ("damaged.npz", r"damaged.npz is a damaged patch file \('heldout_positions' is not of shape \[5, 3\]\)"),
    ("text.npz", "text.npz is not a patch file"),
])
def test_bad_patch_files_raise(tmp_path, name, match):
    broken_files(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "patches.npz").write_bytes(b"")
    with pytest.raises(UserError, match=match):
        load_patch_array(tmp_path / name)


def test_default_source_is_bundled_and_licensed():
    paths = default_image_source()
    assert [p.name for p in paths] == [name for name, _ in DEFAULT_IMAGES]
    assert all(licence for _, licence in DEFAULT_IMAGES)
    assert len(load_images(paths)) == len(DEFAULT_IMAGES)
    assert all(Path(p).parent.name == "data" and Path(p).parent.parent.name == "skimage" for p in paths)


@pytest.mark.skipif(not os.environ.get("ENERGY_MODELS_TEST_PHOTOS"),
                    reason="set ENERGY_MODELS_TEST_PHOTOS to a folder of photographs")
def test_real_photographs():
    patch_set = make_patch_set(os.environ["ENERGY_MODELS_TEST_PHOTOS"], 2000, seed=0)
    assert patch_set.train.shape[1] == patch_set.heldout.shape[1] == 784
    assert len(patch_set.train) + len(patch_set.heldout) == 2000 and len(patch_set.heldout) > 0
    assert 0 <= patch_set.train.min() and patch_set.train.max() <= 1
    assert set(patch_set.train_images).isdisjoint(patch_set.heldout_images)
