"""``edge-sdk extract``: make a client's submodel plan from a global model and write it.

The plan (SubmodelPlan.to_bytes, no pickle) is what `edge-sdk export --plan` and the server
use: `edge-sdk export --model NAME --plan PLAN` exports the client's submodel."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from edge_sdk._io import atomic_write_bytes, check_distinct, check_writable
from edge_sdk.cli._args import seed_arg
from edge_sdk.cli._output import emit_json, format_table
from edge_sdk.cli.profile_cmd import parse_ratio


def register(subparsers: argparse._SubParsersAction) -> None:
    from edge_sdk import models
    from edge_sdk.submodel import plan_names

    parser = subparsers.add_parser(
        "extract",
        help="plan a client's submodel of a global model; write the plan file (export --plan reads it)",
        description=(
            "Make the submodel plan one client gets for one round (what it holds of the global "
            "model) and write it as plan bytes (SubmodelPlan.to_bytes, no pickle). "
            "`edge-sdk export --model NAME --plan PLAN` then exports that submodel."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="NAME", help=f"a reference model as the global model: {', '.join(models.names())}")
    source.add_argument("--checkpoint", metavar="PATH", help="a global-model checkpoint (edge_sdk.export.save_checkpoint)")
    parser.add_argument("--strategy", required=True, choices=plan_names(), help="how the submodel is chosen")
    parser.add_argument("--ratio", required=True, type=_ratio, metavar="R", help="size: fraction of the global model's parameters held, e.g. 1/4")
    parser.add_argument("--round", type=int, default=0, help="federation round (FedRolex's window moves with it)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the reference model's initial weights (use the same with `edge-sdk export --model`)")
    parser.add_argument("--out", required=True, metavar="PLAN", help="where to write the plan bytes")
    parser.add_argument("--json", metavar="PATH|-", help="write a summary as JSON to PATH or stdout (-)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edge_sdk import models, submodel
    from edge_sdk.export import load_checkpoint

    check_distinct({"--out": args.out, "--json": args.json}, {"--checkpoint": args.checkpoint})
    for path in (args.out, None if args.json in (None, "-") else args.json):
        if path:
            check_writable(path)
    if args.model:
        torch.manual_seed(args.seed)
        global_model = models.create(args.model)
    else:
        global_model = load_checkpoint(args.checkpoint)
    plan = submodel.plan(args.strategy, global_model, args.ratio, round=args.round, rng=np.random.default_rng(args.seed))
    data = plan.to_bytes()
    sub = plan.extract(global_model)
    full_params = sum(p.numel() for p in global_model.parameters())
    # a masked (fiarse) submodel carries the whole tensors; what it holds and uploads is the plan's
    sub_params = getattr(plan, "held_parameters", None) or sum(p.numel() for p in sub.parameters())
    summary = {
        "strategy": plan.strategy,
        "ratio": args.ratio,
        "round": args.round,
        "kept_fraction": plan.kept_fraction,
        "maskable_fraction": getattr(plan, "maskable_fraction", None),
        "budget": getattr(plan, "budget", None),
        "global_parameters": full_params,
        "submodel_parameters": sub_params,
        "plan_bytes": len(data),
        "plan": args.out,
    }
    summary = {key: value for key, value in summary.items() if value is not None}
    atomic_write_bytes(args.out, data)
    if args.json:
        emit_json(summary, args.json)
    if args.json != "-":
        rows = [[key, value] for key, value in summary.items()]
        print(format_table(["field", "value"], rows))
    return 0


def _ratio(text: str) -> float:
    from edge_sdk.errors import InvalidInputError

    try:
        return parse_ratio(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
