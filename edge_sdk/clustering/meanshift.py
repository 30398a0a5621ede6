"""Multi-feature tiers: Gaussian-kernel mean shift (KDE mode seeking) with an explicit bandwidth.

Written with numpy and :class:`scipy.spatial.cKDTree` rather than taken from scikit-learn:
scikit-learn is not part of the edge install (only of the ``data`` extra), and its
``MeanShift`` estimates a bandwidth of 0 for six or fewer points. The algorithm:

1. points are pooled into cubic cells of side ``bandwidth``: a cell is one seed and one data
   point at the mean of its points, weighted by their count (exact for a cell with one point;
   this keeps 100,000 clients to about a second, and moves no point by more than the
   prominence rule can resolve: two points closer than ~3.7 bandwidths share a tier anyway);
2. every seed climbs the kernel density by mean-shift steps (Gaussian kernel, standard deviation
   ``bandwidth``, truncated at ``TRUNCATE`` bandwidths) until it moves less than
   ``1e-3 * bandwidth``;
3. seeds that end within ``bandwidth / 4`` of each other share a mode;
4. two modes are merged when the log-density along the segment between them never drops more
   than ``prominence`` nats below the lower of the two (the same rule as the 1-D valleys);
5. each point belongs to the mode its cell's seed climbed to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from scipy.spatial import cKDTree

TRUNCATE = 4.0
CELL = 1.0
MAX_ITER = 500
TOL = 1e-3
MERGE_STEPS = 33


@dataclass
class Modes:
    """Result of mean shift: ``labels`` per point (mode index), ``modes`` (k, d)."""

    labels: np.ndarray
    modes: np.ndarray
    iterations: int


def mean_shift(x: np.ndarray, bandwidth: float, prominence: float) -> Modes:
    """Cluster the rows of ``x`` (n, d) by the modes of their Gaussian KDE."""
    x = np.asarray(x, dtype=float)
    h = float(bandwidth)
    # Points are pooled into cells of side CELL * h: a cell is one seed and one data point at
    # the mean of its points, weighted by their count (exact for a cell holding one point).
    data, weights, cell_of_point = _pool(x, CELL * h)
    seeds = data.copy()
    tree = cKDTree(data)
    seeds, iterations = _climb(seeds, data, weights, tree, h)

    # Seeds that converged to the same place share a mode.
    mode_of_seed, modes = _group(seeds, 0.25 * h)
    # Merge modes with no valley of at least `prominence` nats between them.
    mode_of_seed, modes = _merge(modes, mode_of_seed, data, weights, tree, h, prominence)
    return Modes(labels=mode_of_seed[cell_of_point], modes=modes, iterations=iterations)


def _pool(x: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool points into cubic cells: (cell means, counts, cell index of each point)."""
    cell = np.floor((x - x.min(axis=0)) / side).astype(np.int64)
    _, inverse, counts = np.unique(cell, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((counts.size, x.shape[1]))
    np.add.at(sums, inverse, x)
    return sums / counts[:, None], counts.astype(float), inverse


def _climb(seeds: np.ndarray, data: np.ndarray, weights: np.ndarray, tree: cKDTree, h: float):
    active = np.arange(seeds.shape[0])
    radius = TRUNCATE * h
    it = 0
    for it in range(1, MAX_ITER + 1):
        if active.size == 0:
            break
        moving = seeds[active]
        pairs = cKDTree(moving).sparse_distance_matrix(tree, radius, output_type="ndarray")
        rows, cols, dist = pairs["i"], pairs["j"], pairs["v"]
        w = weights[cols] * np.exp(-0.5 * (dist / h) ** 2)
        den = np.bincount(rows, weights=w, minlength=active.size)
        num = np.stack(
            [np.bincount(rows, weights=w * data[cols, j], minlength=active.size) for j in range(data.shape[1])],
            axis=1,
        )
        new = np.where(den[:, None] > 0, num / np.maximum(den, 1e-300)[:, None], moving)
        shift = np.sqrt(((new - moving) ** 2).sum(axis=1))
        seeds[active] = new
        active = active[shift > TOL * h]
    return seeds, it


def _group(points: np.ndarray, radius: float):
    """Label points so that those within ``radius`` (transitively) share a label."""
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    parent = np.arange(points.shape[0])
    for a, b in pairs:
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([_find(parent, i) for i in range(points.shape[0])])
    uniq, labels = np.unique(roots, return_inverse=True)
    centres = np.stack([points[labels == k].mean(axis=0) for k in range(uniq.size)])
    return labels, centres


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return int(i)


def log_density(points: np.ndarray, data: np.ndarray, weights: np.ndarray, tree: cKDTree, h: float) -> np.ndarray:
    """Log of the (unnormalised) truncated Gaussian KDE at ``points``; ``-inf`` far from data."""
    out = np.full(points.shape[0], -np.inf)
    for i, nbrs in enumerate(tree.query_ball_point(points, r=TRUNCATE * h)):
        if nbrs:
            d2 = ((data[nbrs] - points[i]) ** 2).sum(axis=1)
            out[i] = logsumexp(-0.5 * d2 / h**2, b=weights[nbrs])
    return out


def _merge(modes, mode_of_seed, data, weights, tree, h, prominence):
    k = modes.shape[0]
    if k == 1:
        return mode_of_seed, modes
    peak = log_density(modes, data, weights, tree, h)
    parent = np.arange(k)
    t = np.linspace(0.0, 1.0, MERGE_STEPS)[1:-1, None]
    # Only modes within 2 * TRUNCATE bandwidths are compared; farther pairs stay apart unless
    # a chain of closer modes joins them (union-find is transitive).
    for a, b in cKDTree(modes).query_pairs(2.0 * TRUNCATE * h, output_type="ndarray"):
        path = modes[a] + t * (modes[b] - modes[a])
        valley = float(log_density(path, data, weights, tree, h).min())
        if min(peak[a], peak[b]) - valley < prominence:
            ra, rb = _find(parent, a), _find(parent, b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([_find(parent, i) for i in range(k)])
    uniq, merged = np.unique(roots, return_inverse=True)
    # The surviving mode of a merged group is its highest peak.
    centres = np.stack([modes[np.flatnonzero(merged == g)[np.argmax(peak[merged == g])]] for g in range(uniq.size)])
    return merged[mode_of_seed], centres
