"""Draws a run's TensorBoard scalars as one PNG of panels (a stand-in for a TensorBoard screenshot, for
the README; TensorBoard itself shows the same curves with `tensorboard --logdir RUN_DIR`).

    python -m bench.tensorboard_panels RUN_DIR OUT.png [TAG ...]
"""

import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_TAGS = ("mcmc/rhat_max", "mcmc/ess_min", "mcmc/energy_gap", "epoch_loss", "epoch_energy_data",
                "epoch_grad_norm")


def scalars(run_dir):
    """{(subfolder, tag): [(step, value)]} from the event files under run_dir."""
    import tensorflow as tf

    out = {}
    for path in sorted(pathlib.Path(run_dir).rglob("events.out.tfevents.*")):
        folder = path.parent.relative_to(run_dir).as_posix()
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars" or value.HasField("simple_value"):
                    number = value.simple_value if value.HasField("simple_value") else float(
                        tf.make_ndarray(value.tensor))
                    out.setdefault((folder, value.tag), []).append((event.step, number))
    return out


def main(run_dir, out, tags=DEFAULT_TAGS):
    found = scalars(run_dir)
    panels = [(key, sorted(points)) for tag in tags for key, points in found.items() if key[1] == tag]
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, ((folder, tag), points) in zip(axes.flat, panels):
        steps, values = zip(*points)
        ax.plot(steps, values, "o-", color="#ff7043" if tag.startswith("mcmc") else "#1976d2", ms=4)
        ax.set_title(f"{folder}/{tag}", fontsize=10, loc="left")
        ax.set_xlabel("epoch"), ax.grid(alpha=0.3)
        if tag == "mcmc/rhat_max":
            ax.axhline(1.1, color="gray", ls="--", lw=1)
            ax.text(steps[0], 1.1, " 1.1: mixed below", va="bottom", fontsize=8, color="gray")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"TensorBoard scalars under {run_dir}", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}: {len(panels)} panels")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], tuple(sys.argv[3:]) or DEFAULT_TAGS)
