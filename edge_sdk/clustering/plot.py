"""Draw a clustering: the log-density of ln(score), the cuts and the clients (needs matplotlib)."""

from __future__ import annotations

import io
import os
from fractions import Fraction

import numpy as np

from edge_sdk._io import atomic_write_bytes
from edge_sdk.clustering.core import Clustering
from edge_sdk.errors import MissingDependencyError

PLOT_HINT = 'pip install "edge-fl-sdk[plot]"'


def require_matplotlib() -> None:
    """Raise :class:`MissingDependencyError` when matplotlib (the ``plot`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError(f"plotting needs matplotlib (the plot extra): {PLOT_HINT}") from None


def ratio_label(ratio: float | None) -> str:
    """``0.25`` -> ``"1/4"``; ``None`` -> ``"none fits"``."""
    if ratio is None:
        return "none fits"
    frac = Fraction(ratio).limit_denominator(4096)
    if abs(float(frac) - ratio) <= 1e-9 * max(1.0, ratio):
        return str(frac)
    return f"{ratio:.4g}"


def plot_clustering(clustering: Clustering, path: str | os.PathLike[str], *, dpi: int = 120) -> None:
    """Write a PNG of the clustering to ``path`` (atomically).

    Score mode: the log-density of ln(score) against the score (log axis), the cuts as dashed
    lines and each client as a tick coloured by tier. Multi-feature mode (no 1-D density):
    each client's score against its tier.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = [f"C{k % 10}" for k in range(clustering.n_tiers)]
    scores = np.asarray(clustering.scores, dtype=float)
    labels = np.asarray(clustering.labels)
    ax.set_xscale("log")
    ax.set_xlabel("capacity score (GFLOP/s)")
    if clustering.density is not None:
        grid, log_density = clustering.density
        finite = np.isfinite(log_density)
        # The density is evaluated on windows around runs of data; break the line between them.
        xs, ys = np.exp(grid).astype(float), np.where(finite, log_density, np.nan)
        steps = np.diff(grid)
        if steps.size:
            jumps = np.flatnonzero(steps > 1.5 * np.median(steps)) + 1
            xs, ys = np.insert(xs, jumps, np.nan), np.insert(ys, jumps, np.nan)
        ax.plot(xs, ys, color="0.2", lw=1.2, label="log-density")
        low = float(np.min(log_density[finite])) if finite.any() else -1.0
        high = float(np.max(log_density[finite])) if finite.any() else 0.0
        pad = 0.05 * max(high - low, 1.0)
        for cut in clustering.cuts:
            ax.axvline(cut, color="0.4", ls="--", lw=1.0)
        for k in range(clustering.n_tiers):
            sel = labels == k
            ax.plot(
                scores[sel], np.full(int(sel.sum()), low - pad), "|", color=colours[k], ms=14,
                label=_tier_label(k, int(sel.sum()), clustering.ratios[k]),
            )
        ax.set_ylim(low - 2 * pad, high + pad)
        ax.set_ylabel("log-density of ln(score)")
        ax.set_title(f"{clustering.n_tiers} tiers (bandwidth {clustering.bandwidth:.3g} ln units)")
    else:
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, scores.size)
        for k in range(clustering.n_tiers):
            sel = labels == k
            ax.scatter(
                scores[sel], labels[sel] + jitter[sel], s=12, color=colours[k],
                label=_tier_label(k, int(sel.sum()), clustering.ratios[k]),
            )
        ax.set_ylabel("tier")
        ax.set_yticks(range(clustering.n_tiers))
        ax.set_title(f"{clustering.n_tiers} tiers ({', '.join(clustering.features)}; mean shift)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())


def _tier_label(k: int, count: int, ratio: float | None) -> str:
    return f"tier {k}: {count} client{'' if count == 1 else 's'}, size {ratio_label(ratio)}"
