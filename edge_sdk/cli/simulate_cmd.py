"""``edge-sdk simulate``: a single-process model-heterogeneous federation."""

from __future__ import annotations

import argparse
import math
import sys

from edge_sdk.errors import InvalidInputError


_OPTION_DEST = "strategy_option:"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "simulate",
        help="simulate model-heterogeneous federated training in this process",
        description=(
            "Run a single-process federation: clients spread evenly over size tiers (fractions "
            "of the global model's parameters), a Dirichlet(alpha) label split, every round "
            "each client trains its tier's submodel and the server aggregates. Prints one "
            "progress line per round on stderr and a summary table: the global model's test "
            "accuracy at every tier size, and the clients' local accuracy."
        ),
    )
    merge = p.add_argument_group("robust merging, differential privacy, simulated attacks")
    _add_settings(p, merge)
    p.add_argument("--width", type=float, default=None, metavar="W",
                   help="width multiplier of the global model (default: the model's own, 1)")
    p.add_argument("--clients", type=int, default=20, metavar="N", help="number of clients (default 20)")
    p.add_argument("--tiers", default="1,1/4,1/16,1/64", metavar="LIST",
                   help="submodel sizes as fractions in (0,1] (default 1,1/4,1/16,1/64)")
    p.add_argument("--alpha", type=float, default=0.3, metavar="A",
                   help="Dirichlet concentration of the label split; smaller is more skewed (default 0.3)")
    p.add_argument("--client-fraction", type=float, default=1.0, metavar="F",
                   help="share of clients sampled each round (default 1: all)")
    p.add_argument("--bn-stats", default="recompute", metavar="MODE",
                   help="BatchNorm statistics when evaluating a submodel: recompute (on the clients' "
                        "training data, HeteroFL's static BN; default), aggregated (the merged running "
                        "statistics) or test-batch (each test batch of 20 normalised by its own statistics, "
                        "as the released FIARSE code evaluates); the JSON log has the final accuracy under all three")
    p.add_argument("--server-data", default="proxy", metavar="SRC",
                   help="for a strategy that merges on server data (fedtsa): proxy (an unlabeled held-out slice of the "
                        "training data), deepinversion (synthesised from the models) or none (default proxy)")
    p.add_argument("--server-holdout", type=float, default=0.1, metavar="F",
                   help="with --server-data proxy: fraction of the training data held out for the server (default 0.1)")
    p.add_argument("--eval-every", type=int, default=1, metavar="N",
                   help="evaluate the global model at every size every N rounds (default 1)")
    _add_attack_options(merge)
    p.add_argument("--json", metavar="PATH|-", help="write the full log as JSON to PATH, or - for stdout")
    p.add_argument("--plot", metavar="PATH.png", help="draw accuracy per tier over rounds (needs matplotlib, the plot extra: pip install \"edge-fl-sdk[plot]\")")
    _add_strategy_options(p)
    p.set_defaults(handler=run)
    return p


def _add_settings(p: argparse.ArgumentParser, merge: argparse._ArgumentGroup) -> None:
    """One flag per shared federation setting (:class:`edge_sdk.settings.FederationSettings`,
    declared there once with its default and help; the Flower run config reads the same
    fields); the strategies and merge rules are listed from their registries."""
    from edge_sdk.aggregation.robust import merge_rule_class, merge_rule_names
    from edge_sdk.settings import FederationSettings, settings_of
    from edge_sdk.strategies import strategy_class, strategy_names

    listed = {
        "strategy": "; ".join(f"{n}: {strategy_class(n).summary}" for n in strategy_names()),
        "robust": "merge rule over the clients holding each coordinate: "
                  + "; ".join(f"{n}: {merge_rule_class(n).summary}" for n in merge_rule_names()),
    }
    for f, info in settings_of(FederationSettings):
        text = listed.get(f.name, info.help) + ("" if f.default is None else f" (default {f.default})")
        (merge if info.group == "merge" else p).add_argument(
            f"--{info.key(f)}", type=info.kind, default=f.default, metavar=info.metavar, help=text)


def _add_attack_options(g: argparse._ArgumentGroup) -> None:
    """The simulated attack (attacks listed from their registry)."""
    from edge_sdk.attacks import attack_names

    g.add_argument("--attack", default="none", metavar="NAME[:PARAM]",
                   help=f"simulated attack of the attacking clients: {', '.join(attack_names())} "
                        "(sign-flip, scale:K, samples:N, noise:SIGMA; default none)")
    g.add_argument("--attackers", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of clients attacking, chosen evenly across tiers with a seeded draw (default 0)")


def _add_strategy_options(p: argparse.ArgumentParser) -> None:
    """One flag per strategy option key (``--fiarse-gradient``...), from the registry: a new
    strategy's options appear here with no edit."""
    from edge_sdk.strategies import strategy_class, strategy_names

    group = p.add_argument_group("strategy options (each applies to the strategy it names)")
    seen: set[str] = set()
    for name in strategy_names():
        for option in strategy_class(name).options:
            if option.key in seen:
                continue
            seen.add(option.key)
            flags = [f"--{option.key}", *(f"--{a}" for a in option.aliases)]
            group.add_argument(*flags, dest=_OPTION_DEST + option.key, default=None, metavar="VALUE",
                               help=f"{name}: {option.help} (default {option.default})")


def strategy_options(args: argparse.Namespace) -> dict:
    """The chosen strategy's options given as flags; a flag of another strategy is refused."""
    from edge_sdk.strategies import strategy_class

    given = {k[len(_OPTION_DEST):]: v for k, v in vars(args).items() if k.startswith(_OPTION_DEST) and v is not None}
    cls = strategy_class(args.strategy)
    mine = {o.key: o for o in cls.options}
    other = sorted(set(given) - set(mine))
    if other:
        raise InvalidInputError(f"--{other[0]} is not an option of strategy {cls.name}; its options: "
                                + (", ".join(f"--{k}" for k in mine) or "none"))
    return {mine[k].name: mine[k].parse(v, f"--{k}") for k, v in given.items()}


def build_config(args: argparse.Namespace):
    from edge_sdk.settings import FederationSettings, settings_of
    from edge_sdk.simulation import SimulationConfig

    shared_settings = settings_of(FederationSettings)
    floats = [f.name for f, info in shared_settings if info.kind is float]
    for name in (*floats, "alpha", "client_fraction", "width", "attackers"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise InvalidInputError(f"--{name.replace('_', '-')}={value} is not accepted; expected a finite number")
    shared = {f.name: getattr(args, f.name) for f, _ in shared_settings}
    config = SimulationConfig(
        **shared,
        strategy_options=strategy_options(args),
        model_options={} if args.width is None else {"width": args.width},
        clients=args.clients,
        tiers=args.tiers,
        alpha=args.alpha,
        client_fraction=args.client_fraction,
        eval_every=args.eval_every,
        bn_stats=args.bn_stats,
        server_data=args.server_data,
        server_holdout=args.server_holdout,
        attack=args.attack,
        attackers=args.attackers,
    )
    return config


def run(args: argparse.Namespace) -> int:
    from edge_sdk._io import check_distinct, check_writable
    from edge_sdk.cli._output import emit_json, format_table
    from edge_sdk import simulation

    config = build_config(args)
    simulation.check_config(config)  # names, values, model/data fit, fedra's blocks
    check_distinct({"--json": args.json, "--plot": args.plot})
    if args.json and args.json != "-":
        check_writable(args.json)
    if args.plot:
        if not args.plot.lower().endswith(".png"):
            raise InvalidInputError(f"--plot {args.plot}: expected a .png path")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from edge_sdk.errors import MissingDependencyError

            raise MissingDependencyError('--plot needs matplotlib (the plot extra): pip install "edge-fl-sdk[plot]"') from None
        check_writable(args.plot)

    labels = config.tier_labels

    def progress(m) -> None:
        acc = "  ".join(f"{lab}:{m.global_accuracy[lab]:.3f}" for lab in labels if lab in m.global_accuracy)
        sys.stderr.write(
            f"round {m.round}/{config.rounds}  loss {m.train_loss:.4f}  client acc {m.client_accuracy:.3f}"
            + (f"  global {acc}" if acc else "") + _merge_note(m.merge) + f"  ({m.seconds:.1f}s)\n"
        )
        sys.stderr.flush()

    result = simulation.run_simulation(config, progress=progress)
    doc = result.to_dict()
    if args.plot:
        simulation.plot_history(result, args.plot)
    if args.json:
        emit_json(doc, args.json)
    out = sys.stderr if args.json == "-" else sys.stdout  # stdout stays pure JSON with --json -
    rows = [
        [lab, result.kept_fraction[lab], result.clients_per_tier[lab], result.final[lab],
         result.local_accuracy_per_tier[lab]]
        for lab in labels
    ]
    rows.append(["average", None, config.clients, result.final_average, result.local_accuracy])
    print(f"{config.strategy}: {config.model} on {config.dataset}, {config.clients} clients, "
          f"alpha {config.alpha}, {config.rounds} rounds x {config.local_steps} steps, seed {config.seed} "
          f"({result.wall_time_s:.1f}s)", file=out)
    print(format_table(["size", "kept fraction", "clients", "global acc", "local acc"], rows), file=out)
    for line in _defence_lines(doc):
        print(line, file=out)
    return 0


def _merge_note(merge: dict | None) -> str:
    """The progress line's note on refused updates and privacy spent ('' when nothing to say)."""
    if not merge:
        return ""
    note = ""
    if merge["refused"]:
        ids = [str(r["client"]) for r in merge["refused"]]  # client ids, not a count
        note += f"  refused client{'s' if len(ids) > 1 else ''} " + ",".join(ids)
    privacy = merge.get("privacy")
    if privacy:
        note += f"  eps {privacy['epsilon_total']:.3g} (round {privacy['epsilon_round']:.3g})"
    return note


def _defence_lines(doc: dict) -> list[str]:
    """Summary lines under the table: the merge rule, the attack, refusals, privacy spent."""
    merge, attack, privacy = doc["merge"], doc["attack"], doc["privacy"]
    refused = sum(len((r.get("merge") or {}).get("refused", [])) for r in doc["rounds"])
    lines = [f"merge: {merge['rule']} (sample weights {merge['sample_weights']}); {refused} update(s) refused over "
             f"{len(doc['rounds'])} rounds"]
    if attack["attack"] != "none":
        lines.append(f"attack: {attack['attack']} by clients {attack['clients']} ({attack['fraction']:g} of clients)")
    if privacy is not None:
        lines.append(f"privacy: epsilon {privacy['epsilon']:.3g} at delta {privacy['delta']:g} over "
                     f"{privacy['rounds']} rounds (client-level, {merge['dp']['mode']} noise; no sampling "
                     "amplification claimed)")
    return lines
