"""PNG plots of serving results (matplotlib, Agg backend): latency CDFs and KV memory over time."""

import os
from typing import Dict, List, Sequence, Tuple


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, path: str, xlabel: str, ylabel: str, title: str) -> str:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def latency_cdfs(path: str, series: Dict[str, Sequence[float]], xlabel: str, title: str) -> str:
    """One CDF line per label; values in seconds, plotted in ms."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, values in series.items():
        xs = sorted(v * 1e3 for v in values if v == v)
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=label)
    return _finish(fig, ax, path, xlabel + " (ms)", "fraction of requests", title)


def memory_over_time(path: str, series: Dict[str, List[Tuple[float, float]]], title: str,
                     budget_bytes: float = 0) -> str:
    """One line per label of (t seconds, bytes), plotted in GiB; a dashed line at the budget."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for label, samples in series.items():
        pts = [(p[0], p[1]) for p in samples if len(p) == 2 and isinstance(p[1], (int, float))]
        if pts:
            ax.plot([t for t, _ in pts], [b / 2**30 for _, b in pts], label=label)
    if budget_bytes:
        ax.axhline(budget_bytes / 2**30, linestyle="--", color="gray", label="device budget")
    return _finish(fig, ax, path, "time (s)", "KV memory held (GiB)", title)
