"""One-dimensional tiers: a Gaussian KDE of the log scores, cut at the valleys of its log-density.

The density is scipy's :class:`~scipy.stats.gaussian_kde` with an explicit bandwidth (in the
units of the values, here natural-log units of the score). Peaks of the **log**-density are
found with :func:`scipy.signal.find_peaks`; a peak whose prominence (in nats, i.e. the factor
``exp(prominence)`` by which the density must drop between it and any higher peak) is below
``prominence`` is not a tier of its own. Each valley (lowest log-density between two kept
peaks) is a cut. The log-density is used because the plain density underflows to 0 between
far-apart tiers and the valley disappears in a flat run of zeros.

Two guards keep this cheap and exact on big or wide fleets:

* gaps between consecutive sorted values wider than ``GAP_SPLIT`` bandwidths are cut directly
  (at their midpoint); the density is only evaluated on windows around the data;
* above ``BIN_ABOVE`` clients the KDE is built on a histogram with bins of ``bandwidth / 32``
  (weights = counts), which moves no kernel by more than 1/64 of a bandwidth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks
from scipy.stats import gaussian_kde

#: Gaps wider than this many bandwidths are always cuts (the log-density dips > 18 nats there).
GAP_SPLIT = 12.0
#: Grid step, in bandwidths, at which the log-density is evaluated.
GRID_STEP = 1.0 / 8.0
#: Grid margin, in bandwidths, around each run of data.
GRID_MARGIN = 4.0
#: Largest number of grid points per run of data (a coarser step is used beyond).
GRID_MAX = 16384
#: Above this many values the KDE is built on a fine histogram.
BIN_ABOVE = 4000
BIN_WIDTH = 1.0 / 32.0


@dataclass
class Cuts1D:
    """Where a 1-D sample is cut: ``cuts`` ascending (same units as the values)."""

    cuts: list[float]
    grid: np.ndarray
    log_density: np.ndarray


def rule_bandwidth(x: np.ndarray, rule: str) -> float:
    """Scott's or Silverman's rule of thumb (scipy's factors times the sample std)."""
    n = x.size
    std = float(np.std(x, ddof=1)) if n > 1 else 0.0
    if rule == "scott":
        return std * n ** (-1.0 / 5.0)
    if rule == "silverman":
        return std * (n * 3.0 / 4.0) ** (-1.0 / 5.0)
    raise ValueError(rule)


def cut_1d(x: np.ndarray, bandwidth: float, prominence: float) -> Cuts1D:
    """Cut the values ``x`` (already log-transformed) at the valleys of their log-density.

    ``x`` must hold at least two distinct finite values (the caller handles the degenerate
    fleets: one client, all identical). ``bandwidth`` is the kernel's standard deviation in the
    units of ``x``; ``prominence`` the smallest log-density drop (nats) that separates tiers.
    """
    xs = np.sort(np.asarray(x, dtype=float))
    h = float(bandwidth)
    # Runs of data separated by gaps wider than GAP_SPLIT bandwidths: always cut.
    gaps = np.diff(xs)
    split = np.flatnonzero(gaps > GAP_SPLIT * h)
    starts = np.concatenate(([0], split + 1))
    ends = np.concatenate((split, [xs.size - 1]))
    forced = [float((xs[i] + xs[i + 1]) / 2.0) for i in split]

    kde = _kde(xs, h)
    grids = []
    for s, e in zip(starts, ends):
        lo, hi = xs[s] - GRID_MARGIN * h, xs[e] + GRID_MARGIN * h
        count = min(GRID_MAX, int(math.ceil((hi - lo) / (GRID_STEP * h))) + 1)
        grids.append(np.linspace(lo, hi, max(count, 3)))
    cuts: list[float] = []
    log_dens = []
    for grid in grids:
        f = kde.logpdf(grid)
        log_dens.append(f)
        peaks, _ = find_peaks(f, prominence=prominence)
        if peaks.size == 0:  # a run with one flat-topped bump; find_peaks needs a drop on both sides
            continue
        for a, b in zip(peaks[:-1], peaks[1:]):
            v = a + int(np.argmin(f[a : b + 1]))
            cuts.append(float(grid[v]))
    cuts = sorted(cuts + forced)
    return Cuts1D(cuts=cuts, grid=np.concatenate(grids), log_density=np.concatenate(log_dens))


def _kde(xs: np.ndarray, h: float) -> gaussian_kde:
    """scipy's KDE with a kernel standard deviation of exactly ``h`` (binned for big samples)."""
    if xs.size > BIN_ABOVE:
        width = BIN_WIDTH * h
        idx = np.floor((xs - xs[0]) / width).astype(np.int64)
        bins, counts = np.unique(idx, return_counts=True)
        if bins.size > 1:
            centres = xs[0] + (bins + 0.5) * width
            kde = gaussian_kde(centres, bw_method=1.0, weights=counts.astype(float))
        else:
            kde = gaussian_kde(xs, bw_method=1.0)
    else:
        kde = gaussian_kde(xs, bw_method=1.0)
    # With bw_method=1 the kernel covariance is the data covariance; rescale it to h**2.
    data_std = math.sqrt(float(kde.covariance[0, 0]))
    kde.set_bandwidth(h / data_std)
    return kde
