"""Patch sizes: a side p (p x p) or "HxW", their labels, and the memory check before cutting patches."""

import numpy as np

from energy_models.data.memory import check_fits
from energy_models.errors import UserError

PATCH_SIZE = 28


# Arrays of the patches a trainer holds at its peak: the patch set itself, the trainer's float32 copy of
# the training rows (tf.data, whitening) and the float64 rows of the covariance pass (chunked, counted once).
PEAK_COPIES = 3


def parse_patch_size(value) -> tuple[int, int]:
    """(height, width) of a patch size given as p, "p", "HxW" (e.g. "16x32") or a pair.

    Raises:
        UserError: naming --patch-size when the value is not of that form or a side is below 2 pixels.
    """
    try:
        if isinstance(value, str):
            parts = value.lower().replace(" ", "").split("x")
            sides = tuple(int(part) for part in parts)
        else:
            sides = tuple(int(v) for v in np.atleast_1d(value))
        if len(sides) == 1:
            sides = sides * 2
        if len(sides) == 2 and min(sides) >= 2 and all(int(v) == v for v in np.atleast_1d(value)
                                                        if not isinstance(value, str)):
            return sides
    except (TypeError, ValueError):
        pass
    raise UserError(f"--patch-size must be a side p or height x width such as 16 or 16x32 (each at least 2 "
                    f"pixels), got {value}")


def size_setting(value):
    """A patch size as a setting: the int p for p x p (as recorded before non-square sizes), else "HxW"."""
    height, width = parse_patch_size(value)
    return height if height == width else f"{height}x{width}"


def shape_label(height, width, channels=1):
    """"12x16" for grayscale, "12x16x3" with channels: how messages name a patch size."""
    return f"{height}x{width}" + (f"x{channels}" if channels != 1 else "")


def check_patch_memory(num_patches, patch_size=PATCH_SIZE, channels=1):
    """Refuses (one line) a --num-patches whose patch arrays cannot fit in the memory available now."""
    height, width = parse_patch_size(patch_size)
    check_fits(num_patches, 4 * height * width * channels, PEAK_COPIES, "--num-patches",
               f"{shape_label(height, width, channels)} float32 patches")


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name} must be a positive whole number, got {value!r}; pass e.g. 50000")
