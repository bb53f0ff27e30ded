"""The calibration's frontier as a picture: recall@k against latency, every point and the frontier."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInputError
from .calibration import Calibration


def plot_frontier(calibration: Calibration, path: Path) -> None:
    """Write a PNG of every measured setting (recall@k against mean ms per query, by index kind) with
    the frontier drawn through the undominated ones."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInputError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    kinds = {}
    for p in calibration.points:
        kinds.setdefault(p.plan[0] if p.plan[0] in "pgqh" else "d", []).append(p)
    names = {"p": "IVF", "g": "graph", "q": "PQ", "h": "binary codes", "d": "funnel / exact"}
    for kind, points in kinds.items():
        ax.scatter([p.ms for p in points], [p.recall for p in points], s=12, label=names[kind], alpha=0.6)
    front = calibration.frontier()
    ax.plot([p.ms for p in front], [p.recall for p in front], color="black", linewidth=1, label="frontier")
    ax.set_xscale("log")
    ax.set_xlabel("ms per query, one at a time (mean)")
    ax.set_ylabel(f"recall@{calibration.k}")
    ax.set_title(f"calibration: {calibration.queries}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
