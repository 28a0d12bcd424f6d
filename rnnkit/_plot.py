"""Writing a matplotlib figure: laid out, its folder made, saved, closed (so that a run that
draws many figures does not keep them all), and its path returned."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path, *, dpi: int = 100) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
