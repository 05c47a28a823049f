"""Figures shared by the trainers: image mosaics and maps, as PNG files and TensorBoard images."""

import io
import os
import pathlib

import matplotlib

if not os.environ.get("MPLBACKEND", "").startswith("module://matplotlib_inline"):
    matplotlib.use("Agg")  # Headless: trainers run on servers and in CI; notebooks keep inline figures.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _side(images, size):
    """(height, width, channels) of flattened images: `size` (p, (h, w) or (h, w, c)), or the square
    grayscale side sqrt(D) by default."""
    if size is None:
        side = int(round(np.sqrt(np.shape(images)[-1])))
        if side * side != np.shape(images)[-1]:
            raise ValueError(f"images of {np.shape(images)[-1]} pixels are not square: pass size=(height, width)")
        return side, side, 1
    size = (size, size) if np.ndim(size) == 0 else tuple(size)
    return (tuple(size) + (1,))[:3]


def image_grid(images, rows=8, cols=8, size=None, pad=1, scale="clip"):
    """Tiles flattened images [n, h * w (* c)] into one [rows * (h + pad) + pad, cols * (w + pad) + pad]
    mosaic in [0, 1] (with a trailing axis of 3 for colour images).

    The tiling is `skimage.util.montage` with white fill (missing tiles and the `pad`-pixel gaps, borders
    included, are 1); only the per-image scaling is done here.

    Args:
      images: array [n, h * w] (or [n, h * w * c], each row an [h, w, c] image flattened row-major); the
        first rows * cols are drawn (missing ones stay blank).
      rows, cols: mosaic shape.
      size: side of each image, (height, width) or (height, width, channels); by default the square
        grayscale side sqrt(D).
      pad: blank pixels between images and around the mosaic.
      scale: "clip" clips to [0, 1] (pixels); "each" rescales every image to its own [min, max] over all its
        channels (filters, whitened patches, whose range is arbitrary).
    """
    from skimage.util import montage

    height, width, channels = _side(images, size)
    images = np.asarray(images, dtype=np.float64)[: rows * cols].reshape(-1, height, width, channels)
    if scale == "each":
        lo = images.min(axis=(1, 2, 3), keepdims=True)
        hi = images.max(axis=(1, 2, 3), keepdims=True)
        images = (images - lo) / np.maximum(hi - lo, 1e-12)
    else:
        images = np.clip(images, 0.0, 1.0)
    if len(images) == 0:  # montage needs one tile to know the tile shape.
        blank = np.ones((rows * (height + pad) + pad, cols * (width + pad) + pad, channels))
        return blank[..., 0] if channels == 1 else blank
    if channels == 1:
        return montage(images[..., 0], fill=1.0, grid_shape=(rows, cols), padding_width=pad)
    return montage(images, fill=(1.0,) * channels, grid_shape=(rows, cols), padding_width=pad, channel_axis=-1)


def summary_image(mosaic):
    """A mosaic [h, w] or [h, w, 3] as the [1, h, w, c] batch `tf.summary.image` takes."""
    mosaic = np.asarray(mosaic)
    return mosaic[None, :, :, None] if mosaic.ndim == 2 else mosaic[None]


def pair_grid(left, right, cols=4, size=None, pad=1, gap=6):
    """Tiles pairs of flattened images, left_k | right_k side by side, `cols` pairs a row, into one mosaic.

    Both images of a pair share one grey scale, the pair's own range: v -> (v - lo) / (hi - lo) with
    lo, hi = min and max over the two images. So a pair shows how far one image moved from the other (a
    mode smoother than its start reads as flatter), while pairs of very different ranges each stay visible.
    Images of a pair are `pad` pixels apart, pairs `gap` pixels apart; the background is white.

    Args:
      left, right: arrays [n, h * w (* c)] (e.g. starts and the modes found from them).
      size: as for `image_grid`: p, (h, w) or (h, w, c); by default the square grayscale side sqrt(D).
    Returns:
      [rows * (h + gap) + gap, cols * (2 * w + pad + gap) + gap] array in [0, 1] ([..., 3] for colour).
    """
    h, w, c = _side(left, size)
    left = np.asarray(left, np.float64).reshape(-1, h, w, c)
    right = np.asarray(right, np.float64).reshape(-1, h, w, c)
    pairs = np.stack([left, right], axis=1)  # [n, 2, h, w, c]
    lo = pairs.min(axis=(1, 2, 3, 4), keepdims=True)
    hi = pairs.max(axis=(1, 2, 3, 4), keepdims=True)
    pairs = (pairs - lo) / np.maximum(hi - lo, 1e-12)
    rows = -(-len(pairs) // cols)
    width, height = 2 * w + pad + gap, h + gap
    out = np.ones((rows * height + gap, cols * width + gap, c))
    for k, (a, b) in enumerate(pairs):
        top, first = gap + (k // cols) * height, gap + (k % cols) * width
        out[top:top + h, first:first + w] = a
        out[top:top + h, first + w + pad:first + 2 * w + pad] = b
    return out[..., 0] if c == 1 else out


def save_gray_png(path, mosaic, upscale=2):
    """Writes a [h, w] array in [0, 1] as an 8-bit grayscale PNG ([h, w, 3]: RGB), nearest-neighbour upscaled."""
    from PIL import Image

    pixels = np.clip(np.round(np.asarray(mosaic) * 255), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")
    if upscale > 1:
        image = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return str(path)


def maps_figure(maps, titles, suptitle=None, cmap="RdBu_r", cols=None):
    """A matplotlib figure of several [H, W] maps side by side (`cols` a row; default all in one row), each
    with its own colour bar.

    Signed maps use a diverging colour map centred on zero, so positive and negative couplings read apart.
    """
    cols = cols or len(maps)
    rows = -(-len(maps) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(maps):]:
        ax.axis("off")
    for ax, m, title in zip(axes.flat, maps, titles):
        m = np.asarray(m)
        bound = float(np.max(np.abs(m))) or 1.0
        if m.min() >= 0:
            im = ax.imshow(m, cmap="viridis")
        else:
            im = ax.imshow(m, cmap=cmap, vmin=-bound, vmax=bound)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def figure_to_array(fig, path=None, dpi=100):
    """Renders a figure to an RGB uint8 array [h, w, 3] (and to `path` as PNG if given), then closes it."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    data = buffer.getvalue()
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def precision_maps(diag, couplings, offsets, path=None, title=None):
    """The diagonal and each coupling map of a grid precision, as an RGB array (and PNG).

    Colour maps ([H, W, C], offsets (dr, dc, dk)) are drawn one panel per channel pair and offset: "R-G right"
    maps Lambda[(p, R), (p + right, G)] over pixels p; "same pixel" panels couple the channels of one pixel."""
    names = {(0, 1): "right", (1, 0): "down", (1, 1): "down-right", (1, -1): "down-left"}
    if np.ndim(diag) == 2:
        maps = [diag] + list(couplings)
        titles = ["diagonal Lambda[i, i]"] + [f"coupling {names[tuple(o)]} {tuple(o)}" for o in offsets]
        return figure_to_array(maps_figure(maps, titles, suptitle=title), path)
    channels = np.shape(diag)[-1]
    label = "RGB" if channels == 3 else [str(k) for k in range(channels)]
    maps = [diag[..., k] for k in range(channels)]
    titles = [f"diagonal, channel {label[k]}" for k in range(channels)]
    for o, coupling in zip(offsets, couplings):
        dr, dc, dk = o
        for k in range(max(0, -dk), min(channels, channels - dk)):
            maps.append(coupling[..., k])
            pair = label[k] if dk == 0 else f"{label[k]}-{label[k + dk]}"
            titles.append(f"{pair} same pixel" if (dr, dc) == (0, 0) else f"{pair} {names[(dr, dc)]}")
    return figure_to_array(maps_figure(maps, titles, suptitle=title, cols=channels), path)


def histograms(samples, path, title=None, xlabel="log p(x)", bins=60):
    """Overlaid histograms of several named 1-D samples (e.g. log p per set), written as PNG.

    Values outside the 0.5-99.5% range of all samples pooled are clipped into the end bins, so one
    far outlier does not squeeze every histogram into one bar.
    """
    pooled = np.concatenate([np.asarray(v, np.float64) for v in samples.values()])
    pooled = pooled[np.isfinite(pooled)]
    lo, hi = np.percentile(pooled, [0.5, 99.5]) if len(pooled) else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in samples.items():
        values = np.clip(np.asarray(values, np.float64), edges[0], edges[-1])
        ax.hist(values[np.isfinite(values)], bins=edges, alpha=0.5, density=True, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_to_array(fig, path)


def response_histograms(responses, path=None, title=None, bins=81, panels=8):
    """Histograms of filter responses r = f^T (x - m) against the standard normal, on a log scale.

    responses: [n, m] (a column per filter). Each column is standardised; the `panels` columns of largest
    excess kurtosis are drawn, each as the log of its histogram density beside log N(0, 1): a sparse
    filter shows a sharp peak and straight (Laplace-like) or heavier tails above the Gaussian's parabola.
    Returns the RGB array of the figure (and writes `path` as PNG if given).
    """
    r = np.asarray(responses, np.float64)
    r = (r - r.mean(axis=0)) / np.maximum(r.std(axis=0), 1e-12)
    kurtosis = np.mean(r ** 4, axis=0) - 3.0
    order = np.argsort(kurtosis)[::-1][:panels]
    edges = np.linspace(-8, 8, bins + 1)
    centres = (edges[1:] + edges[:-1]) / 2
    cols = min(4, len(order))
    rows = -(-len(order) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), squeeze=False)
    for ax, j in zip(axes.flat, order):
        density, _ = np.histogram(np.clip(r[:, j], edges[0], edges[-1]), bins=edges, density=True)
        shown = density > 0
        ax.plot(centres[shown], np.log(density[shown]), ".", ms=3, label="responses")
        ax.plot(centres, -0.5 * centres ** 2 - 0.5 * np.log(2 * np.pi), "-", lw=1, label="N(0, 1)")
        ax.set_ylim(-12, 1)
        ax.set_title(f"filter {j}: kurtosis {kurtosis[j]:.1f}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(order):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return figure_to_array(fig, path)
