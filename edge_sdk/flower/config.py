"""Run settings (Flower run config) and node settings (SuperNode node config), checked.

Flower passes both as flat ``key = value`` maps (keys with dashes, TOML scalars). Unknown
keys are ignored (an app may add its own); a known key with a bad value raises
:class:`~edge_sdk.errors.InvalidInputError` naming the key and what is accepted.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from edge_sdk.errors import InvalidInputError
from edge_sdk.settings import FederationSettings, setting, setting_with_default, settings_of

__all__ = ["RunSettings", "NodeSettings", "ServerDataSpec", "parse_ladder", "parse_server_data", "DEFAULT_LADDER"]

DEFAULT_LADDER = "1,1/4,1/16,1/64"
CORRUPT = "corrupt"  # node-config attack: one flipped byte in the encoded update
SERVER_DATA_FORMS = ("'<dataset>:<size>[:<seed>]' with dataset one of {names} (e.g. 'mnist1d:512'), "
                     "or a path to a .npz file holding a float array 'x'")


@dataclass(frozen=True)
class ServerDataSpec:
    """FedTSA's stage-2 server data, as named by run config ``server-data``.

    ``kind="builtin"``: ``size`` training samples of ``edge_sdk.datasets.load(dataset,
    seed=seed)`` held out for the server (the same draw as the simulation's proxy slice); every
    node drops those samples from its data before its partition is cut, so no node trains or
    evaluates on them. ``kind="npz"``: the array ``x`` of the .npz file at ``path`` (a ``y``
    array, if present, is ignored: stage 2 uses no labels).
    """

    text: str
    kind: str
    dataset: str = ""
    size: int = 0
    seed: int = 0
    path: str = ""


def _server_data_error(value: Any, why: str) -> InvalidInputError:
    from edge_sdk import datasets

    forms = SERVER_DATA_FORMS.format(names=", ".join(datasets.names()))
    return InvalidInputError(f"config server-data={value!r} is not accepted ({why}); expected {forms}")


def parse_server_data(value: Any) -> ServerDataSpec | None:
    """``"mnist1d:512"`` / ``"digits:300:1"`` / ``"/data/proxy.npz"`` -> a spec; ``""`` -> None.

    Only the form is checked here (nodes parse the run config too, and the file lives on the
    server); :func:`edge_sdk.flower.serverdata.load_server_data` opens it.
    """
    from edge_sdk import datasets

    if isinstance(value, bool) or not isinstance(value, str):
        raise _server_data_error(value, "not a string")
    text = value.strip()
    if not text:
        return None
    if text.lower().endswith(".npz"):
        return ServerDataSpec(text, "npz", path=text)
    parts = [p.strip() for p in text.split(":")]
    name = parts[0].lower()
    if name not in datasets.names() or len(parts) not in (2, 3):
        why = f"unknown data set {parts[0]!r}" if name not in datasets.names() else "expected a size after the name"
        raise _server_data_error(value, why)
    try:
        size = int(parts[1])
        seed = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise _server_data_error(value, "size and seed must be integers") from None
    if size < 1 or seed < 0:
        raise _server_data_error(value, "size must be >= 1 and seed >= 0")
    return ServerDataSpec(text, "builtin", dataset=name, size=size, seed=seed)


def parse_ladder(text: str | Any) -> tuple[float, ...]:
    """``"1,1/4,1/16"`` -> (1.0, 0.25, 0.0625): distinct sizes in (0, 1], largest first."""
    items = [t.strip() for t in str(text).split(",")] if not isinstance(text, (list, tuple)) else list(text)
    out: list[float] = []
    for item in items:
        try:
            value = float(Fraction(str(item)))
        except (ValueError, ZeroDivisionError):
            raise InvalidInputError(f"ladder item {item!r} is not a fraction; expected e.g. 1,1/4,1/16,1/64") from None
        if not 0 < value <= 1:
            raise InvalidInputError(f"ladder item {item!r} is outside (0, 1]; a size is a fraction of the model")
        if value in out:
            raise InvalidInputError(f"ladder item {item!r} is given twice; sizes must be distinct")
        out.append(value)
    if not out:
        raise InvalidInputError("ladder is empty; expected e.g. 1,1/4,1/16,1/64")
    return tuple(sorted(out, reverse=True))


def _get(cfg: Mapping[str, Any], key: str, default: Any, kind: type, *, minimum: float | None = None) -> Any:
    if key not in cfg:
        return default
    value = cfg[key]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise InvalidInputError(f"config {key}={value!r} is not accepted; expected true or false")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InvalidInputError(f"config {key}={value!r} is not accepted; expected an integer")
        try:
            value = int(value)
        except ValueError:
            raise InvalidInputError(f"config {key}={value!r} is not accepted; expected an integer") from None
    elif kind is float:
        if isinstance(value, bool):
            raise InvalidInputError(f"config {key}={value!r} is not accepted; expected a number")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InvalidInputError(f"config {key}={value!r} is not accepted; expected a number") from None
        if not math.isfinite(value):
            raise InvalidInputError(f"config {key}={value!r} is not accepted; expected a finite number")
    else:
        value = str(value)
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"config {key}={value!r} is not accepted; expected a value >= {minimum:g}")
    return value


@dataclass
class RunSettings(FederationSettings):
    """What the ServerApp runs (``[tool.flwr.app.config]`` / ``flwr run -c``): the shared
    :class:`~edge_sdk.settings.FederationSettings` plus the deployment's own fields.

    Run-config keys are the field names with dashes (``local-steps``); a strategy's options
    are its option keys (``fiarse-gradient``, ``lora-rank``, ``fedtsa-steps``...; see
    ``edge_sdk.strategies.strategy_class(name).options``). Timeouts are in seconds.
    ``min-nodes``: connected nodes to wait for (at most ``wait-timeout``) before the first
    query. ``min-replies``: updates a round needs to be merged (fewer: the global model is
    kept and the run goes on). ``out-dir``: where the run summary and exported artifacts go
    (empty: ``~/.cache/edge-sdk/flower/run-<id>``). ``server-data`` (for a strategy that
    merges on server data, required there): ``"<dataset>:<size>[:<seed>]"`` or a .npz path
    (see :class:`ServerDataSpec`). The merge path: ``robust`` (``none``, ``median``,
    ``trimmed-mean[:BETA]``, ``clipped-mean[:BOUND]`` or any registered rule),
    ``sample-weights`` (auto, trust, cap:K, equal), ``outlier-norm``, ``outlier-cosine``,
    ``dp-clip`` (0 or absent: no DP), ``dp-noise``, ``dp-delta``, ``dp-mode`` (server or
    client); the round's merge report and the privacy spent go to the run summary.
    """

    rounds: int = setting_with_default(FederationSettings, "rounds", 3)
    ladder: tuple[float, ...] = field(default_factory=lambda: parse_ladder(DEFAULT_LADDER))
    min_nodes: int = setting(1, int, "connected nodes to wait for before the first query", minimum=1)
    min_replies: int = setting(1, int, "updates a round needs to be merged", minimum=1)
    wait_timeout: float = setting(120.0, float, "seconds to wait for min-nodes", minimum=0)
    query_timeout: float = setting(60.0, float, "seconds a node has to answer a query", minimum=0.1)
    round_timeout: float = setting(300.0, float, "seconds a node has to return its update", minimum=0.1)
    poll_interval: float = setting(0.5, float, "seconds between polls for replies", minimum=0.01)
    eval_every: int = setting(0, int, "evaluate every N rounds (0: at the end only)", minimum=0)
    quick_profile: bool = setting(True, bool, "nodes profile themselves with --quick")
    export: bool = setting(True, bool, "export every tier's model at the end")
    export_samples: int = setting(64, int, "calibration samples of the export", minimum=1)
    out_dir: str = setting("", str, "where the run summary and artifacts go")
    save_models: bool = setting(False, bool, "save the global model and the tier models")
    server_data: str = setting("", str, "server data of a strategy that merges on it")  # see ServerDataSpec

    def server_data_spec(self) -> ServerDataSpec | None:
        """The parsed ``server-data`` (None when empty)."""
        return parse_server_data(self.server_data)

    def uses_server_data(self) -> bool:
        from edge_sdk.errors import UnknownNameError
        from edge_sdk.strategies import strategy_class

        try:
            return strategy_class(self.strategy).uses_server_data
        except UnknownNameError:
            return False

    def server_holdout(self) -> ServerDataSpec | None:
        """The built-in samples every node must leave out (only when the strategy uses them)."""
        spec = self.server_data_spec() if self.uses_server_data() else None
        return spec if spec is not None and spec.kind == "builtin" else None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RunSettings:
        d = cls()
        options = cfg.get("model-options", "")
        if options:
            try:
                parsed = json.loads(str(options))
            except (json.JSONDecodeError, RecursionError) as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                raise InvalidInputError(f"config model-options={options!r} is not JSON ({why}); "
                                        'expected e.g. {"width": 0.5}') from None
            if not isinstance(parsed, dict):
                raise InvalidInputError(f"config model-options={options!r} is not a JSON object")
        else:
            parsed = {}
        values = {f.name: _get(cfg, info.key(f), getattr(d, f.name), info.kind, minimum=info.minimum)
                  for f, info in settings_of(cls)}
        s = cls(**values, strategy_options=_strategy_options(values["strategy"], cfg), model_options=parsed,
                ladder=parse_ladder(cfg["ladder"]) if "ladder" in cfg else d.ladder)
        s.dp_clip = s.dp_clip or None  # 0: no DP
        if s.momentum >= 1:
            raise InvalidInputError(f"config momentum={s.momentum!r} is not accepted; expected 0 <= momentum < 1")
        if "server-data" in cfg and not isinstance(cfg["server-data"], str):
            raise _server_data_error(cfg["server-data"], "not a string")
        s.server_data_spec()  # checks the form
        s.merge_settings()  # checks the rule, the sample policy, outlier thresholds and DP
        return s

    def to_dict(self) -> dict[str, Any]:
        out = {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}
        out["ladder"] = list(self.ladder)
        return out

    def output_dir(self, run_id: int | str) -> Path:
        if self.out_dir:
            return Path(os.path.expanduser(self.out_dir))
        return Path.home() / ".cache" / "edge-sdk" / "flower" / f"run-{run_id}"


def _strategy_options(strategy: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``strategy`` set in the run config (an unknown strategy has none here:
    it is refused when the server builds it)."""
    from edge_sdk.errors import UnknownNameError
    from edge_sdk.strategies import strategy_class

    try:
        cls = strategy_class(strategy)
    except UnknownNameError:
        return {}
    return cls.options_from_config(cfg)


@dataclass
class NodeSettings:
    """One SuperNode's settings (``flower-supernode --node-config "..."``).

    ``hw-profile``: estimate the capability report from this hardware profile instead of
    measuring the device. ``partition-id`` / ``num-partitions`` / ``alpha`` / ``seed`` /
    ``dataset``: the node's non-IID share (a Dirichlet(alpha) label split, the same on every
    node for the same seed). ``cache-dir``: where the measured report and generated data are
    kept between messages and runs. ``attack``: make this node hostile, to test a
    deployment's defences: a registered attack on its update (``sign-flip``, ``scale:K``,
    ``samples:N``, ``noise:SIGMA``; see :mod:`edge_sdk.attacks`) or ``corrupt`` (one flipped
    byte in the encoded update); empty for an honest node.
    """

    hw_profile: str | None = None
    partition_id: int = 0
    num_partitions: int = 1
    dataset: str | None = None
    alpha: float = 0.3
    seed: int = 0
    cache_dir: str = ""
    threads: int = 1
    budget_ms: float | None = None
    budget_mb: float | None = None
    attack: str = ""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> NodeSettings:
        d = cls()
        hw = _get(cfg, "hw-profile", "", str).strip()
        s = cls(
            hw_profile=hw or None,
            partition_id=_get(cfg, "partition-id", d.partition_id, int, minimum=0),
            num_partitions=_get(cfg, "num-partitions", d.num_partitions, int, minimum=1),
            dataset=_get(cfg, "dataset", "", str) or None,
            alpha=_get(cfg, "alpha", d.alpha, float),
            seed=_get(cfg, "seed", d.seed, int, minimum=0),
            cache_dir=_get(cfg, "cache-dir", d.cache_dir, str),
            threads=_get(cfg, "threads", d.threads, int, minimum=1),
            budget_ms=_get(cfg, "budget-ms", None, float),
            budget_mb=_get(cfg, "budget-mb", None, float),
            attack=_get(cfg, "attack", "", str).strip(),
        )
        if s.attack and s.attack != CORRUPT:
            from edge_sdk.attacks import make_attack

            if not make_attack(s.attack).sends_update:  # checks the spec
                raise InvalidInputError(f"node config attack={s.attack!r} is not accepted on Flower: a node that "
                                        "sends nothing is a node that is off (stop it); the attack is for simulation")
        if s.partition_id >= s.num_partitions:
            raise InvalidInputError(f"node config partition-id={s.partition_id} is not accepted; "
                                    f"expected 0 <= partition-id < num-partitions ({s.num_partitions})")
        if not s.alpha > 0:
            raise InvalidInputError(f"node config alpha={s.alpha!r} is not accepted; expected a number > 0")
        for key, value in (("budget-ms", s.budget_ms), ("budget-mb", s.budget_mb)):
            if value is not None and not value > 0:
                raise InvalidInputError(f"node config {key}={value!r} is not accepted; expected a number > 0")
        return s

    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(os.path.expanduser(self.cache_dir))
        return Path.home() / ".cache" / "edge-sdk" / "flower"
