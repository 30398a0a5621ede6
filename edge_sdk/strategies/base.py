"""The shared base of every federated method: what each client gets, how updates merge.

A strategy answers, for one round: the size each client trains (:meth:`Strategy.sizes`),
each client's submodel plan (:meth:`Strategy.make_plans`), the options its local training
needs (:meth:`Strategy.train_options`), how the updates merge into the global model
(:meth:`Strategy.merge`), and which model stands for a size when the run is evaluated or
exported (:meth:`Strategy.evaluation_plan`, :meth:`Strategy.tier_model`). It holds no
global model (only what its own method keeps between rounds, such as fiarse-structured's
remembered ranking: one object per run) and sends no message: ``edge_sdk.simulation`` and
the Flower ServerApp drive the same objects and differ only in how the plans and updates
travel (the pattern of Flower's ``Strategy.start()`` over a ``Grid``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from edge_sdk.aggregation.robust_merge import MergeSettings
from edge_sdk.errors import InvalidInputError
from edge_sdk.privacy.accountant import PrivacyAccountant
from edge_sdk.strategies.options import Option

__all__ = ["Strategy", "kept_fraction"]

K = TypeVar("K", bound=Hashable)


def kept_fraction(plan: Any) -> float:
    """The fraction of the global model's parameters ``plan`` holds (1 for the whole model)."""
    return 1.0 if plan is None else float(plan.kept_fraction)


def _merge_settings(merge: Any, name: str) -> MergeSettings:
    if merge is None:
        return MergeSettings()
    if not isinstance(merge, MergeSettings):
        raise InvalidInputError(f"strategy {name}: merge={merge!r} is not accepted; expected "
                                "edge_sdk.aggregation.MergeSettings")
    return merge


class Strategy:
    """Base class. Subclasses set the class attributes and override what differs.

    ``plan_name``: the :func:`edge_sdk.submodel.plan` strategy of each client's plan (None:
    clients train the whole model). ``fill``: what a payload carries, ``"held"`` (what the
    plan holds) or ``"state"`` (the submodel's whole state, for plans with frozen tensors).
    ``plans_per_client``: every client draws its own plan (otherwise clients of one size
    share one). ``uses_server_data``: the merge runs on server-side data, which the driver
    provides as the ``server_data`` constructor argument.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    plan_name: ClassVar[str | None] = None
    fill: ClassVar[str] = "held"
    plans_per_client: ClassVar[bool] = False
    uses_server_data: ClassVar[bool] = False
    robust_scope: ClassVar[str] = "model"  # "tier": robust rules / DP run inside each tier (FedTSA's stage 1)
    options: ClassVar[tuple[Option, ...]] = ()
    requires_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, seed: int = 0, merge: MergeSettings | None = None, **options: Any) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidInputError(f"strategy {self.name}: seed={seed!r} is not accepted; expected an integer >= 0")
        self.seed = seed
        self.option_values = self.check_options(options)
        self.merge_settings = _merge_settings(merge, self.name)
        dp = self.merge_settings.dp
        self.accountant = None if dp is None else PrivacyAccountant(dp.delta)
        self.last_report: dict[str, Any] | None = None  # what the last merge did (its "merge" entry always)

    # ---- options and availability -----------------------------------------------------
    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option with its value (given or default), checked; unknown names refused."""
        known = {o.name: o for o in cls.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            accepted = ", ".join(known) or "none"
            raise InvalidInputError(f"strategy {cls.name}: unknown option(s) {', '.join(unknown)}; accepted: {accepted}")
        return {n: (o.parse(options[n], f"{cls.name} option {n}") if n in options else o.default)
                for n, o in known.items()}

    @classmethod
    def options_from_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The options set in a flat run config (by their keys), checked."""
        out = {}
        for o in cls.options:
            found, value = o.from_config(config)
            if found:
                out[o.name] = value
        return out

    def option(self, name: str) -> Any:
        return self.option_values[name]

    @classmethod
    def missing(cls) -> str:
        """What is not installed for this strategy ('' when it is available)."""
        import importlib.util

        absent = []
        for module in cls.requires_modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if not found:
                absent.append(module)
        return f"{', '.join(absent)} not installed" if absent else ""

    @classmethod
    def available(cls) -> bool:
        return not cls.missing()

    # ---- the model ----------------------------------------------------------------------
    @classmethod
    def model_problem(cls, model: nn.Module) -> str | None:
        """Why ``model`` cannot be trained with this strategy (None: it can)."""
        return None

    def check_model(self, model: nn.Module, label: str = "") -> None:
        problem = self.model_problem(model)
        if problem is not None:
            raise InvalidInputError(f"strategy {self.name} needs {problem}; {label or type(model).__name__!r} has none")

    def prepare_global(self, model: nn.Module, rng: np.random.Generator) -> nn.Module:
        """Change the freshly built global model once before round 1 (e.g. add adapters)."""
        self.check_model(model)
        return model

    # ---- plans --------------------------------------------------------------------------
    def sizes(self, ratios: Mapping[K, float]) -> dict[K, float]:
        """The size each client trains this round (its tier's ratio by default)."""
        return {k: float(r) for k, r in ratios.items()}

    def plan(self, global_model: nn.Module, ratio: float, *, round: int, rng: np.random.Generator,
             example_input: torch.Tensor | None = None) -> Any:
        """One client's plan at size ``ratio`` (None: the whole model)."""
        if self.plan_name is None:
            return None
        from edge_sdk import submodel

        return submodel.plan(self.plan_name, global_model, float(ratio), round=round, example_input=example_input,
                             rng=rng, **self.plan_options())

    def plan_options(self) -> dict[str, Any]:
        """Options passed to :func:`edge_sdk.submodel.plan`."""
        return {}

    def make_plans(self, global_model: nn.Module, ratios: Mapping[K, float], *, round: int,
                   rng: np.random.Generator, example_input: torch.Tensor | None = None) -> dict[K, Any]:
        """One plan per client, in key order. Clients of one size share one plan object
        (so it is made, sent and scattered once) unless ``plans_per_client``."""
        sizes = self.sizes(ratios)
        if self.plans_per_client:
            return {k: self.plan(global_model, sizes[k], round=round, rng=rng, example_input=example_input)
                    for k in sorted(sizes)}
        by_size: dict[float, Any] = {}
        for size in sorted(set(sizes.values()), reverse=True):
            by_size[size] = self.plan(global_model, size, round=round, rng=rng, example_input=example_input)
        return {k: by_size[sizes[k]] for k in sorted(sizes)}

    def extract(self, plan: Any, global_model: nn.Module) -> nn.Module:
        """The module a client trains for ``plan`` (a copy of the whole model without one)."""
        return copy.deepcopy(global_model) if plan is None else plan.extract(global_model)

    def train_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`edge_sdk.training.train_local` this strategy sets."""
        return {}

    # ---- merge --------------------------------------------------------------------------
    @classmethod
    def accepted_plans(cls) -> tuple[str, ...]:
        """The plan strategies whose updates this strategy merges."""
        return (cls.plan_name or cls.name,)

    def merge(self, global_model: nn.Module, updates: Sequence[Any], *, round: int = 0,
              assigned: Sequence[Any] | None = None) -> nn.Module:
        """Merge ``updates`` of round ``round`` into ``global_model`` (in place; returned).

        ``assigned``: the plan each update was sent, in the same order; an update for another
        plan is refused. Every update is checked first (:mod:`edge_sdk.aggregation.screening`:
        a bad one raises UpdateRejectedError naming it, the model untouched); an identical
        update listed twice counts once. Then the merge settings' rule runs (default: the
        strategy's own sample-weighted mean, :meth:`merge_mean`, bit-for-bit). What happened
        is in ``last_report["merge"]`` (refused / clipped / down-weighted updates, fallback,
        privacy spent)."""
        from edge_sdk.aggregation._common import validate_updates
        from edge_sdk.aggregation.robust_merge import MergeReport
        from edge_sdk.aggregation.screening import check_integrity, drop_duplicates

        updates = list(updates) if not isinstance(updates, list) else updates
        validate_updates(global_model, updates, self.name, self.accepted_plans())
        ms = self.merge_settings
        check_integrity(global_model, updates, value_bound=ms.value_bound, assigned=assigned)
        unique, index, duplicates = drop_duplicates(updates)
        self.last_report = None
        if ms.plain():
            t0 = time.perf_counter()
            model = self.merge_mean(global_model, unique, round=round)
            report = MergeReport(rule="none", sample_weights="trust", updates=len(updates), merged=len(unique),
                                 seconds=time.perf_counter() - t0)
        else:
            model, report = self._robust_merge(global_model, unique, index, round)
        report.duplicates = duplicates
        if report.privacy is not None and self.accountant is not None:
            report.privacy.update(self.accountant.record(round, report.privacy["noise_multiplier"]))
        self.last_report = {**(self.last_report or {}), "merge": report.to_dict()}
        return model

    def screen(self, global_model: nn.Module, updates: Sequence[Any], *,
               assigned: Sequence[Any] | None = None) -> list[tuple[int, str]]:
        """(index, reason) of every update :meth:`merge` would refuse, each checked alone
        (nothing is merged and no privacy is spent): what a driver drops before merging."""
        from edge_sdk.aggregation._common import validate_updates
        from edge_sdk.aggregation.screening import check_integrity
        from edge_sdk.errors import UpdateRejectedError

        refused = []
        for i, u in enumerate(updates):
            try:
                validate_updates(global_model, [u], self.name, self.accepted_plans())
                check_integrity(global_model, [u], value_bound=self.merge_settings.value_bound,
                                assigned=None if assigned is None else [assigned[i]])
            except UpdateRejectedError as exc:
                refused.append((i, str(exc).replace("update 0 ", "", 1)))
        return refused

    def merge_mean(self, global_model: nn.Module, updates: list[Any], *, round: int = 0) -> nn.Module:
        """The method's own merge of checked updates: each element the sample-weighted mean
        over the clients whose plan holds it; elements nobody holds keep their value."""
        from edge_sdk.aggregation.rules import per_element

        return per_element(global_model, updates, self.name, accepts=self.accepted_plans())

    def _robust_merge(self, global_model: nn.Module, updates: list[Any], index: list[int],
                      round: int) -> tuple[nn.Module, Any]:
        from edge_sdk.aggregation.robust_merge import commit, merge_reports, robust_values, tier_updates

        ms = self.merge_settings
        state = global_model.state_dict()
        gen = self._noise_generator(round)
        std = None
        if ms.dp is not None and ms.dp.mode == "client":
            noise = self.client_privacy({i: u.plan for i, u in enumerate(updates)}, global_model)
            std = [noise[i]["dp_noise_std"] for i in range(len(updates))]
        if self.robust_scope != "tier":
            values, report = robust_values(state, updates, ms, generator=gen, client_std=std, index=index)
            return commit(global_model, values), report
        merged, reports = tier_updates(state, updates, ms, generator=gen, client_std=std, index=index)
        return self.merge_mean(global_model, merged, round=round), merge_reports(reports)

    def _noise_generator(self, round: int) -> torch.Generator:
        dp = self.merge_settings.dp
        if dp is not None and not dp.reproducible:
            import secrets

            return torch.Generator().manual_seed(secrets.randbits(63))
        seed = int(np.random.default_rng([self.seed, 4099, int(round)]).integers(2**63 - 1))
        return torch.Generator().manual_seed(seed)

    def client_privacy(self, plans: Mapping[K, Any], global_model: nn.Module) -> dict[K, dict[str, float]]:
        """Client-mode DP: per client, the clip bound and noise standard deviation its device
        applies before upload (empty dicts otherwise). Clients sharing a plan share values.
        Call with the round's plans before they are sent."""
        dp = self.merge_settings.dp
        if dp is None or dp.mode != "client":
            return {k: {} for k in plans}
        from edge_sdk.privacy.mechanism import client_noise_std

        groups: list[dict[K, Any]] = [dict(plans)]
        if self.robust_scope == "tier":  # noise is averaged inside a tier: count holders there
            from edge_sdk.aggregation.screening import same_plan

            groups = []
            for k, p in plans.items():
                for g in groups:
                    if same_plan(next(iter(g.values())), p):
                        g[k] = p
                        break
                else:
                    groups.append({k: p})
        out: dict[K, dict[str, float]] = {}
        for g in groups:
            for k, std in client_noise_std(g, global_model, dp).items():
                out[k] = {"dp_clip": dp.clip, "dp_noise_std": std}
        return out

    def privacy_spent(self) -> dict[str, float] | None:
        """(epsilon, delta) of every DP merge so far (None without DP)."""
        if self.accountant is None:
            return None
        return {"epsilon": self.accountant.epsilon(), "delta": self.accountant.delta,
                "rounds": len(self.accountant.noise_by_round)}

    def describe_report(self, report: Mapping[str, Any]) -> str | None:
        """One log line about ``last_report`` (None: nothing worth a line)."""
        m = report.get("merge") if isinstance(report, Mapping) else None
        if not m or (m["rule"] == "none" and not m["refused"] and not m["duplicates"] and not m["privacy"]):
            return None
        parts = [f"merge {m['rule']}: {m['merged']}/{m['updates']} updates"]
        if m["refused"]:
            parts.append("refused " + ", ".join(f"{r['update']} ({r['reason']})" for r in m["refused"]))
        if m["duplicates"]:
            parts.append(f"duplicates {m['duplicates']} counted once")
        if m["fallback_fraction"]:
            parts.append(f"{m['fallback_fraction']:.1%} of coordinates fell back to the clipped mean")
        if m["privacy"]:
            p = m["privacy"]
            parts.append(f"DP z={p['noise_multiplier']:.3g}, epsilon {p.get('epsilon_total', float('nan')):.3g} "
                         f"at delta {p.get('delta', float('nan')):g}")
        return "; ".join(parts)

    # ---- evaluation and export ----------------------------------------------------------
    def evaluation_plan(self, global_model: nn.Module, ratio: float, *, round: int, rng: np.random.Generator,
                        example_input: torch.Tensor | None = None) -> Any:
        """The plan that defines "the global model at size ``ratio``" when it is evaluated."""
        return self.plan(global_model, ratio, round=round, rng=rng, example_input=example_input)

    def evaluation_plans(self, global_model: nn.Module, ratios: Mapping[K, float], *, round: int,
                         example_input: torch.Tensor | None = None) -> dict[K, Any]:
        """Per client, the plan of "the global model at its size" (:meth:`evaluation_plan` of its
        ratio, made once per ratio with the rng :meth:`tier_model` uses): what a client
        evaluates after round ``round``, the model the run exports for its size."""
        by_ratio: dict[float, Any] = {}
        for ratio in sorted({float(r) for r in ratios.values()}, reverse=True):
            by_ratio[ratio] = self.evaluation_plan(global_model, ratio, round=round,
                                                   rng=self._evaluation_rng(round), example_input=example_input)
        return {k: by_ratio[float(ratios[k])] for k in sorted(ratios)}

    def _evaluation_rng(self, round: int) -> np.random.Generator:
        """The rng of an evaluation plan after round ``round`` (the same for every size and call)."""
        return np.random.default_rng([self.seed, 7919, round])

    def export_size(self, ratio: float) -> float:
        """The size whose model is exported for clients that train size ``ratio``."""
        return float(ratio)

    def tier_model(self, global_model: nn.Module, ratio: float, *, round: int) -> nn.Module:
        """A plain module standing for size ``ratio`` of the final global model (for export):
        the extracted submodel, with parameter-level masks applied as zeros."""
        plan = self.evaluation_plan(global_model, ratio, round=round, rng=self._evaluation_rng(round))
        if plan is None:
            return global_model
        sub = plan.extract(global_model)
        dense = getattr(sub, "dense", None)
        return dense() if callable(dense) else sub
