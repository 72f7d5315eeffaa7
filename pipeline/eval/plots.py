"""The one look of every figure the evaluations write (matplotlib, headless)."""

from __future__ import annotations


def new_axes():
    """(figure, axes) of a 6.4×4.8-inch, 120-dpi figure on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6.4, 4.8), dpi=120)


def save_axes(fig, ax, path, xlabel: str, ylabel: str, title: str) -> None:
    """Label, grid, legend, write ``path`` (PNG) and close the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
