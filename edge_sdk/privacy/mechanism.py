"""The Gaussian mechanism over heterogeneous coverage.

Every client's change (all float coordinates it holds, BatchNorm statistics included: they
are computed from its data) is clipped to L2 norm C, and the merge is an unweighted
per-coordinate mean. Adding or removing one client moves the vector of per-coordinate sums
by at most C in L2 whatever it holds, so Gaussian noise of standard deviation z*C on every
sum gives the Gaussian mechanism with noise multiplier z. In the mean of coordinate j,
divided by its n_j holders, that noise is z*C/n_j: a coordinate two clients hold gets ten
times the noise of one twenty hold, which is exactly what its smaller crowd needs.
BatchNorm running variances that the noise pushes below 0 are clamped at 0 after the merge
(post-processing: the guarantee is unchanged; a negative variance makes every forward NaN).

Server mode adds the z*C noise to each sum. Client mode has each device add noise of
standard deviation z*C/sqrt(m_i) to its clipped change, m_i the fewest holders of any
coordinate it holds (computed by the server from the round's plans and sent with the plan);
on coordinate j the holders' noises add to variance sum_i z^2 C^2 / m_i >= z^2 C^2 because
every m_i <= n_j. The server then only averages. Client mode trusts the other clients to
add their share (as Flower's client-side variant trusts them to clip).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from edge_sdk.errors import InvalidInputError

__all__ = ["DPSettings", "DP_MODES", "clip_factor", "client_noise_std", "privatize_update", "holder_counts"]

DP_MODES = ("server", "client")


@dataclass(frozen=True)
class DPSettings:
    """``clip``: L2 bound C of one client's change; ``noise``: multiplier z (noise standard
    deviation z*C on every per-coordinate sum); ``mode``: who adds it. ``reproducible``:
    draw the noise from a generator seeded by the run's seed and round (simulation); off,
    it comes from the operating system's entropy (a deployment: seeded noise can be
    subtracted by anyone who knows the seed)."""

    clip: float
    noise: float
    delta: float = 1e-5
    mode: str = "server"
    reproducible: bool = False

    def __post_init__(self) -> None:
        for key, value in (("dp-clip", self.clip), ("dp-noise", self.noise)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (key == "dp-clip" and value == 0):
                raise InvalidInputError(f"{key}={value!r} is not accepted; expected a finite number "
                                        f"{'> 0' if key == 'dp-clip' else '>= 0'}")
        if isinstance(self.delta, bool) or not isinstance(self.delta, (int, float)) or not 0 < self.delta < 1:
            raise InvalidInputError(f"dp-delta={self.delta!r} is not accepted; expected 0 < delta < 1")
        if self.mode not in DP_MODES:
            raise InvalidInputError(f"dp-mode={self.mode!r} is not accepted; expected one of {', '.join(DP_MODES)}")


def clip_factor(norm: float, bound: float) -> float:
    """The factor that brings a change of L2 ``norm`` within ``bound`` (1 when it is)."""
    return 1.0 if norm <= bound or norm == 0 else bound / norm


def holder_counts(plans: Iterable[Any], global_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Per float global tensor: how many of ``plans`` hold each coordinate (None: all)."""
    from edge_sdk.aggregation.coverage import held_mask

    state = global_model.state_dict()
    counts = {n: torch.zeros(t.shape, dtype=torch.int32) for n, t in state.items() if t.is_floating_point()}
    for plan in plans:
        for name in counts:
            mask = held_mask(plan, name, state[name])
            if mask is not None:
                counts[name] += mask
    return counts


def client_noise_std(plans: Mapping[Any, Any], global_model: torch.nn.Module, dp: DPSettings) -> dict[Any, float]:
    """Client mode: the noise standard deviation each client adds, z*C/sqrt(m_i) (see the
    module docstring); clients sharing one plan object share one value."""
    distinct = {id(p): p for p in plans.values()}
    counts = holder_counts(plans.values(), global_model)
    state = global_model.state_dict()
    from edge_sdk.aggregation.coverage import held_mask

    out_by_plan = {}
    for key, plan in distinct.items():
        fewest = None
        for name, c in counts.items():
            mask = held_mask(plan, name, state[name])
            if mask is None or not bool(mask.any()):
                continue
            low = int(c[mask.bool()].min())
            fewest = low if fewest is None else min(fewest, low)
        out_by_plan[key] = dp.noise * dp.clip / math.sqrt(max(fewest or 1, 1))
    return {k: out_by_plan[id(p)] for k, p in plans.items()}


def privatize_update(update: Any, start: Mapping[str, torch.Tensor], clip: float, std: float,
                     generator: torch.Generator | None = None) -> Any:
    """Client mode, on the device: the update with its change (``update - start``, over its
    float tensors) clipped to L2 ``clip`` and Gaussian noise of standard deviation ``std``
    added to every held coordinate. ``start`` holds the values the client received, shaped
    as the update's tensors. Returns a new Update."""
    import dataclasses

    names = [n for n, t in update.tensors.items() if t.is_floating_point()]
    deltas = {n: update.tensors[n].double() - start[n].double() for n in names}
    norm = math.sqrt(sum(float((d * d).sum()) for d in deltas.values()))
    factor = clip_factor(norm, float(clip))
    tensors = dict(update.tensors)
    for n in names:
        d = deltas[n] * factor
        if std > 0:
            d = d + torch.randn(d.shape, generator=generator, dtype=torch.float64) * float(std)
        tensors[n] = (start[n].double() + d).to(update.tensors[n].dtype)
    metrics = {**update.metrics, "dp_clip_factor": factor}
    return dataclasses.replace(update, tensors=tensors, metrics=metrics)
