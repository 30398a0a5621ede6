"""Simulated attacks, so users can test their defences (``edge-sdk simulate --attack``).

An attack rewrites an attacking client's honest update after local training: its change
(update minus the values it received) is flipped, scaled or replaced by noise, or its
sample count is inflated. ``choose_attackers`` picks the attackers evenly across tiers with
a seeded draw, so every size has its share. A new attack is one ``@register_attack`` class.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from edge_sdk._specs import split_spec
from edge_sdk.errors import InvalidInputError, UnknownNameError

__all__ = ["Attack", "register_attack", "attack_names", "make_attack", "choose_attackers"]

_ATTACKS: dict[str, type[Attack]] = {}
A = TypeVar("A", bound="type[Attack]")


class Attack:
    """Base class: ``apply(update, start, generator)`` returns the attacker's update."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default: ClassVar[float | None] = None  # the parameter when ``NAME`` comes without ``:PARAM``
    sends_update: ClassVar[bool] = True  # False: the attacker sends nothing (simulation only)

    def __init__(self, param: float | None = None) -> None:
        if param is None:
            param = self.default
        elif not math.isfinite(param):
            raise InvalidInputError(f"attack {self.name}: parameter {param!r} is not finite")
        self.param = param

    @property
    def spec(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param:g}"

    def change(self, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return delta

    def apply(self, update: Any, start: Mapping[str, torch.Tensor], generator: torch.Generator) -> Any:
        tensors = dict(update.tensors)
        for name, t in update.tensors.items():
            if t.is_floating_point():
                delta = t - start[name].to(t.dtype)
                tensors[name] = (start[name].to(t.dtype) + self.change(delta, generator)).to(t.dtype)
        return dataclasses.replace(update, tensors=tensors)


def register_attack(cls: A) -> A:
    _ATTACKS[cls.name] = cls
    return cls


@register_attack
class NoAttack(Attack):
    name = "none"
    summary = "no attack"

    def apply(self, update: Any, start: Mapping[str, torch.Tensor], generator: torch.Generator) -> Any:
        return update


@register_attack
class SignFlip(Attack):
    name = "sign-flip"
    summary = "send the negated change"

    def change(self, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -delta


@register_attack
class Scale(Attack):
    name = "scale"
    summary = "send the change times K (default 10)"
    default = 10.0

    def change(self, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return delta * float(self.param)  # type: ignore[arg-type]


@register_attack
class Noise(Attack):
    name = "noise"
    summary = "send Gaussian noise of standard deviation SIGMA (default 1) instead of the change"
    default = 1.0

    def change(self, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(delta.shape, generator=generator, dtype=delta.dtype) * float(self.param)  # type: ignore[arg-type]


@register_attack
class Samples(Attack):
    name = "samples"
    summary = "report N samples (default 1e9) with an honest change"
    default = 1e9

    def apply(self, update: Any, start: Mapping[str, torch.Tensor], generator: torch.Generator) -> Any:
        return dataclasses.replace(update, num_samples=max(1, int(self.param)))  # type: ignore[arg-type]


@register_attack
class Absent(Attack):
    """The attackers send nothing, every round: what a defence that refused exactly the
    attackers and nobody else would keep (their data is lost with them). The reference a
    defence's loss is measured against; a simulation attack only (a Flower node that sends
    nothing is a node that is off: stop it)."""

    name = "absent"
    summary = "send no update at all (the ideal-defence reference: attackers' data is lost, nothing else)"
    sends_update = False


def attack_names() -> tuple[str, ...]:
    return tuple(_ATTACKS)


def make_attack(spec: str | Attack | None) -> Attack:
    """``"sign-flip"``, ``"scale:10"``, ``"samples:1e9"``, ``"noise:0.5"``, ``"absent"`` or ``"none"``."""
    if isinstance(spec, Attack):
        return spec
    name, param = split_spec("none" if spec is None else spec, "attack", tuple(_ATTACKS))
    cls = _ATTACKS.get(name)
    if cls is None:
        raise UnknownNameError(f"unknown attack {name!r}; known: {', '.join(_ATTACKS)}")
    return cls(param)


def choose_attackers(tier_of: Sequence[int], fraction: float, seed: int) -> list[int]:
    """round(fraction x clients) attackers spread evenly across tiers (a seeded choice of
    which tiers take the remainder and of the clients inside each tier)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise InvalidInputError(f"attackers={fraction!r} is not accepted; expected 0 <= fraction < 1")
    total = int(round(fraction * len(tier_of)))
    if total == 0:
        return []
    rng = np.random.default_rng([int(seed), 31337])
    tiers = sorted(set(tier_of))
    members = {t: [c for c, tt in enumerate(tier_of) if tt == t] for t in tiers}
    order = [tiers[i] for i in rng.permutation(len(tiers))]
    share = {t: 0 for t in tiers}
    left = total
    while left > 0:
        progressed = False
        for t in order:
            if left and share[t] < len(members[t]):
                share[t] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    chosen: list[int] = []
    for t in tiers:
        if share[t]:
            chosen.extend(int(c) for c in rng.choice(members[t], size=share[t], replace=False))
    return sorted(chosen)
