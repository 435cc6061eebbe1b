"""Figure helpers shared by the reports (training runs and ``diffaug-fast eval``): matplotlib on Agg, saved as PNG."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


def finish_figure(fig, path: Path, legend_axes, fontsize: int = 8) -> None:
    import matplotlib.pyplot as plt

    if legend_axes.get_legend_handles_labels()[1]:  # a run without DiffAug-Ensemble t's has nothing to label
        legend_axes.legend(fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@contextmanager
def figure(path: Path, figsize=(6, 3.8), fontsize: int = 8):
    """One-axes figure: draw on the yielded axes; it is saved (with a legend) to ``path`` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield ax
    finally:
        finish_figure(fig, path, ax, fontsize)
