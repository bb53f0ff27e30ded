"""Pictures of a calibration: its frontier (recall@k against latency), and the effort a policy spends per query."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from .calibration import Calibration


def _pyplot():
    """matplotlib's pyplot, drawing to files."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInputError("--plot needs matplotlib (pip install matplotlib)") from None
    return plt


def plot_frontier(calibration: Calibration, path: Path) -> None:
    """Write a PNG of every measured setting (recall@k against mean ms per query, by index kind) with
    the frontier drawn through the undominated ones."""
    plt = _pyplot()
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


def plot_effort(effort: dict[str, np.ndarray], path: Path, *, what: str, title: str) -> None:
    """Write a PNG histogram of per-query effort, stacked by group (`effort`: a group's name, e.g. the plan
    that served its queries, → one count per query, e.g. IVF lists probed), with the mean marked; `what`
    names the count, `title` the policy."""
    counts = [np.asarray(c) for c in effort.values()]
    if not counts or any(c.ndim != 1 or not len(c) for c in counts):
        raise InvalidInputError(f"effort must map names to non-empty 1-D arrays of per-query counts, got "
                                f"{ {name: np.shape(c) for name, c in effort.items()} }")
    every = np.concatenate(counts)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    edges = np.arange(every.min(), every.max() + 2) - 0.5 if every.max() - every.min() < 60 else 40
    ax.hist(counts, bins=edges, stacked=True, label=list(effort), alpha=0.85)
    ax.axvline(every.mean(), color="black", linewidth=1, label=f"mean {every.mean():.1f}")
    ax.set_xlabel(what)
    ax.set_ylabel("queries")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_policy_effort(calibration: Calibration, path: Path, target: float = 0.95) -> None:
    """Write a PNG histogram of the effort the policy for `target` gives each calibration query (lists probed
    where its plans probe IVF lists, multiply-adds otherwise), stacked by the plan that served it."""
    effort = calibration.notes.get("effort", {}).get(str(target))
    if effort is None:
        raise InvalidInputError(f"this calibration holds no per-query effort for target {target} (re-run tune)")
    lists = any(effort["lists_probed"])
    counts = np.array(effort["lists_probed"] if lists else effort["multiply_adds"])
    groups, start = {}, 0
    for plan, n in effort["plans"].items():
        groups[f"{plan} ({n} queries)"] = counts[start : start + n]
        start += n
    plot_effort(groups, path, what="IVF lists probed per query" if lists else "multiply-adds per query",
                title=f"target_recall={target}: effort per calibration query ({calibration.queries})")
