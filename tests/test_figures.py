"""Image mosaics: tile placement, padding, scaling and blank tiles, checked pixel by pixel."""

import numpy as np

from energy_models import figures


def test_image_grid_places_tile_k_at_row_k_div_cols_and_column_k_mod_cols():
    # Tile k is the constant image k / 10: its position in the mosaic is readable from its value.
    tiles = np.repeat(np.arange(5)[:, None] / 10.0, 6, axis=1)  # 5 images of 2 x 3
    grid = figures.image_grid(tiles, rows=2, cols=3, size=(2, 3), pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1)
    for k in range(5):
        r, c = divmod(k, 3)
        block = grid[1 + 3 * r:1 + 3 * r + 2, 1 + 4 * c:1 + 4 * c + 3]
        np.testing.assert_array_equal(block, k / 10.0)
    # The sixth tile is missing: blank (white), as are the pad rows and columns.
    np.testing.assert_array_equal(grid[4:6, 9:12], 1.0)
    np.testing.assert_array_equal(grid[0], 1.0)
    np.testing.assert_array_equal(grid[:, 4], 1.0)


def test_image_grid_clips_pixels_or_rescales_each_image():
    image = np.array([[-0.5, 0.25, 0.5, 2.0]])
    clipped = figures.image_grid(image, rows=1, cols=1, size=2, pad=0)
    np.testing.assert_array_equal(clipped, [[0.0, 0.25], [0.5, 1.0]])
    each = figures.image_grid(image, rows=1, cols=1, size=2, pad=0, scale="each")
    np.testing.assert_allclose(each, [[0.0, 0.75 / 2.5], [1.0 / 2.5, 1.0]])


def test_image_grid_of_no_images_is_blank():
    grid = figures.image_grid(np.zeros((0, 4)), rows=2, cols=2, size=2, pad=1)
    assert grid.shape == (7, 7)
    np.testing.assert_array_equal(grid, 1.0)
