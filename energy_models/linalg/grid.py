"""The sparsity pattern of a precision matrix on a 2-D pixel grid.

Pixels of an H x W image are numbered row-major, i = r * W + c. Two pixels are neighbours when their
offset (dr, dc) is one of

    4-connected:  (0, 1), (1, 0)                     (right, down)
    8-connected:  (0, 1), (1, 0), (1, 1), (1, -1)    (right, down, down-right, down-left)

together with the opposite offsets. A symmetric grid precision Lambda is therefore described by its
diagonal (an H x W map) and, for each of these "half" offsets o, an H x W coupling map C_o with

    Lambda[i, i + o] = Lambda[i + o, i] = C_o[i]    wherever both pixels lie on the grid,

and C_o[i] = 0 (masked) where pixel i + o falls off the grid. Nothing in this module depends on
TensorFlow: it is the shared bookkeeping of the operator, the layer and the exact solver.

Colour (C > 1 channels): the same grid over pixels, each pixel a C-vector. Values are numbered
pixel-interleaved, i = (r * W + c) * C + k (the layout of an [H, W, C] image flattened row-major), and
Lambda is block-sparse with C x C blocks: Lambda[(p, k), (q, l)] is free when p = q (the channels of one
pixel) or when p and q are grid neighbours (any channels k, l), and zero otherwise. The offsets are triples
(dr, dc, dk): for each spatial half offset (dr, dc) above, dk = -(C - 1) .. C - 1 (channel k of pixel p
with channel k + dk of pixel p + (dr, dc)), then (0, 0, dk), dk = 1 .. C - 1, within a pixel (for RGB:
R-G and G-B at dk = 1, R-B at dk = 2). Per-channel grids coupled only within a pixel (no dk != 0 between
neighbours) have fewer parameters but fit photographs far worse: natural colour is mostly luminance, so R
at one pixel covaries with G at the next (BENCHMARKS.md, "energy_models/linalg/grid.py: colour blocks").
The maps have the shape [H, W, C] (diagonal) and [n_offsets, H, W, C] (couplings); with C = 1 they stay
[H, W] and the offsets pairs.
"""

import dataclasses

import numpy as np

OFFSETS = {
    4: ((0, 1), (1, 0)),
    8: ((0, 1), (1, 0), (1, 1), (1, -1)),
}


def check_neighbourhood(neighbourhood):
    """Returns `neighbourhood` as an int, or raises ValueError naming it when it is not 4 or 8."""
    if neighbourhood not in OFFSETS:
        raise ValueError(f"neighbourhood must be 4 or 8, got {neighbourhood!r}")
    return int(neighbourhood)


@dataclasses.dataclass(frozen=True)
class GridPattern:
    """Index bookkeeping for the grid precision pattern.

    Attributes:
      height, width: grid shape; D = height * width * channels.
      neighbourhood: 4 or 8.
      offsets: the half offsets (dr, dc), or (dr, dc, dk) with channels, one coupling map each.
      masks: float array [n_offsets, *map_shape], 1 where value i + o lies on the grid.
      rows, cols: int arrays [E], the edges (i, j) with i < j in the order of the masked coupling
        entries (offset-major, then row-major over i); E = number of free coupling parameters.
    """

    height: int
    width: int
    neighbourhood: int
    offsets: tuple
    masks: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    channels: int = 1

    @property
    def dim(self):
        return self.height * self.width * self.channels

    @property
    def map_shape(self):
        """Shape of the diagonal map and of each coupling map: (H, W), or (H, W, C) with channels."""
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width, self.channels)

    def flat_offset(self, offset):
        """The offset in flattened indices, k = (dr * W + dc) * C + dk: Lambda[i, i + k] is offset's coupling."""
        dr, dc, dk = (tuple(offset) + (0,))[:3]
        return (dr * self.width + dc) * self.channels + dk

    @property
    def bandwidth(self):
        """Half-bandwidth of every matrix with this pattern: the largest flat offset (W + 1 for 8 neighbours)."""
        return max(self.flat_offset(o) for o in self.offsets)

    @property
    def num_edges(self):
        return int(self.rows.size)

    @property
    def num_params(self):
        """Free parameters of a symmetric precision with this pattern: D diagonal + E couplings."""
        return self.dim + self.num_edges

    def couplings_to_edges(self, couplings):
        """Maps coupling maps [n_offsets, H, W] to the edge vector [E] (masked entries dropped)."""
        return np.asarray(couplings)[self.masks.astype(bool)]

    def edges_to_couplings(self, edge_values):
        """Inverse of `couplings_to_edges`: edge vector [E] -> coupling maps with zeros off the grid."""
        out = np.zeros(self.masks.shape, dtype=np.asarray(edge_values).dtype)
        out[self.masks.astype(bool)] = edge_values
        return out

    def dense(self, diag, couplings):
        """Dense symmetric [D, D] numpy matrix from a diagonal map [H, W] and coupling maps."""
        diag = np.asarray(diag)
        d = self.dim
        out = np.zeros((d, d), dtype=diag.dtype)
        out[np.arange(d), np.arange(d)] = diag.reshape(-1)
        values = self.couplings_to_edges(couplings)
        out[self.rows, self.cols] = values
        out[self.cols, self.rows] = values
        return out

    def from_dense(self, matrix):
        """(diag [H, W], couplings [n_offsets, H, W]) read off a [D, D] matrix on the pattern: a NumPy array
        or a scipy sparse matrix (whose entries are read without densifying it)."""
        if not hasattr(matrix, "tocsr"):
            matrix = np.asarray(matrix)
        diag = np.asarray(matrix.diagonal()).reshape(self.map_shape)
        return diag, self.edges_to_couplings(np.asarray(matrix[self.rows, self.cols]).ravel())


def grid_pattern(height, width, neighbourhood=4, channels=1):
    """Builds the `GridPattern` of an H x W grid with 4- or 8-connected neighbours.

    Args:
      height, width: positive ints, the image shape.
      neighbourhood: 4 or 8.
      channels: C; with C > 1 each pixel is a C-vector and Lambda has C x C blocks on the grid's pattern.

    Returns:
      A `GridPattern`.

    Raises:
      ValueError: if the shape is not positive or the neighbourhood is not 4 or 8.
    """
    neighbourhood = check_neighbourhood(neighbourhood)
    if height < 1 or width < 1 or channels < 1:
        raise ValueError(f"grid shape must be positive, got {height} x {width} x {channels}")
    offsets = OFFSETS[neighbourhood]
    if channels > 1:
        offsets = (tuple((dr, dc, dk) for dr, dc in offsets for dk in range(1 - channels, channels))
                   + tuple((0, 0, dk) for dk in range(1, channels)))
    r, c, k = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    masks, rows, cols = [], [], []
    for offset in offsets:
        dr, dc, dk = (tuple(offset) + (0,))[:3]
        valid = ((r + dr >= 0) & (r + dr < height) & (c + dc >= 0) & (c + dc < width)
                 & (k + dk >= 0) & (k + dk < channels))
        masks.append(valid.reshape((height, width) if channels == 1 else valid.shape))
        rows.append(((r * width + c) * channels + k)[valid])
        cols.append((((r + dr) * width + (c + dc)) * channels + (k + dk))[valid])
    return GridPattern(
        height=height,
        width=width,
        neighbourhood=neighbourhood,
        offsets=offsets,
        masks=np.stack(masks).astype(np.float32),
        rows=np.concatenate(rows).astype(np.int64),
        cols=np.concatenate(cols).astype(np.int64),
        channels=int(channels),
    )
