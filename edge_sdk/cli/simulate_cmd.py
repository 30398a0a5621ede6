"""``edge-sdk simulate``: a single-process model-heterogeneous federation."""

from __future__ import annotations

import argparse
import math
import sys

from edge_sdk.errors import InvalidInputError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from edge_sdk.simulation import STRATEGIES

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
    p.add_argument("--strategy", default="fiarse", metavar="NAME",
                   help=f"one of {', '.join(STRATEGIES)} (default fiarse)")
    p.add_argument("--dataset", default="mnist1d", metavar="NAME", help="mnist1d or digits (default mnist1d)")
    p.add_argument("--model", default="cnn1d", metavar="NAME",
                   help="reference model (default cnn1d); fedra needs vit_tiny or mixer_tiny")
    p.add_argument("--width", type=float, default=None, metavar="W",
                   help="width multiplier of the global model (default: the model's own, 1)")
    p.add_argument("--clients", type=int, default=20, metavar="N", help="number of clients (default 20)")
    p.add_argument("--tiers", default="1,1/4,1/16,1/64", metavar="LIST",
                   help="submodel sizes as fractions in (0,1] (default 1,1/4,1/16,1/64)")
    p.add_argument("--alpha", type=float, default=0.3, metavar="A",
                   help="Dirichlet concentration of the label split; smaller is more skewed (default 0.3)")
    p.add_argument("--rounds", type=int, default=20, metavar="R", help="communication rounds (default 20)")
    p.add_argument("--local-steps", type=int, default=10, metavar="K",
                   help="local SGD steps per client and round (default 10)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="local batch size (default 32)")
    p.add_argument("--lr", type=float, default=0.05, help="local learning rate (default 0.05)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--client-fraction", type=float, default=1.0, metavar="F",
                   help="share of clients sampled each round (default 1: all)")
    p.add_argument("--fiarse-gradient", default="surrogate", metavar="MODE",
                   help="fiarse only: the paper's surrogate gradient (default) or the hard mask's")
    p.add_argument("--bn-stats", default="recompute", metavar="MODE",
                   help="BatchNorm statistics when evaluating a submodel: recompute (on the clients' "
                        "training data, HeteroFL's static BN; default) or aggregated")
    p.add_argument("--server-data", default="proxy", metavar="SRC",
                   help="fedtsa only: stage-2 server data: proxy (an unlabeled held-out slice of the "
                        "training data), deepinversion (synthesised from the models) or none (default proxy)")
    p.add_argument("--server-holdout", type=float, default=0.1, metavar="F",
                   help="fedtsa with proxy data: fraction of the training data held out for the server (default 0.1)")
    p.add_argument("--distill-steps", type=int, default=20, metavar="N",
                   help="fedtsa only: mutual-learning steps per round (default 20)")
    p.add_argument("--eval-every", type=int, default=1, metavar="N",
                   help="evaluate the global model at every size every N rounds (default 1)")
    p.add_argument("--json", metavar="PATH|-", help="write the full log as JSON to PATH, or - for stdout")
    p.add_argument("--plot", metavar="PATH.png", help="draw accuracy per tier over rounds (needs edge-sdk[plot])")
    p.set_defaults(handler=run)
    return p


def build_config(args: argparse.Namespace):
    from edge_sdk.simulation import SimulationConfig

    for name in ("lr", "alpha", "client_fraction", "width"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise InvalidInputError(f"--{name.replace('_', '-')}={value} is not accepted; expected a finite number")
    config = SimulationConfig(
        strategy=args.strategy,
        dataset=args.dataset,
        model=args.model,
        clients=args.clients,
        tiers=args.tiers,
        alpha=args.alpha,
        rounds=args.rounds,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        fiarse_gradient=args.fiarse_gradient,
        client_fraction=args.client_fraction,
        eval_every=args.eval_every,
        bn_stats=args.bn_stats,
        server_data=args.server_data,
        server_holdout=args.server_holdout,
        fedtsa_options={"distill_steps": args.distill_steps},
        model_kwargs={} if args.width is None else {"width": args.width},
    )
    return config


def run(args: argparse.Namespace) -> int:
    from edge_sdk._io import check_writable
    from edge_sdk.cli._output import emit_json, format_table
    from edge_sdk import simulation

    config = build_config(args)
    simulation.check_config(config)  # names, values, model/data fit, fedra's blocks
    if args.json and args.json != "-":
        check_writable(args.json)
    if args.plot:
        if not args.plot.lower().endswith(".png"):
            raise InvalidInputError(f"--plot {args.plot}: expected a .png path")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from edge_sdk.errors import MissingDependencyError

            raise MissingDependencyError('--plot needs matplotlib: pip install "edge-sdk[plot]"') from None
        check_writable(args.plot)

    labels = config.tier_labels

    def progress(m) -> None:
        acc = "  ".join(f"{lab}:{m.global_accuracy[lab]:.3f}" for lab in labels if lab in m.global_accuracy)
        sys.stderr.write(
            f"round {m.round}/{config.rounds}  loss {m.train_loss:.4f}  client acc {m.client_accuracy:.3f}"
            + (f"  global {acc}" if acc else "") + f"  ({m.seconds:.1f}s)\n"
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
    return 0
