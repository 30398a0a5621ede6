"""The federation a bench trains, as command-line options with the FIARSE table's defaults
(bench/bench_fiarse_table.py): 20 clients, Dirichlet 0.3, 40 rounds x 10 local steps of
batch 32 at lr 0.05. Shared by the benches that vary something else on that setup."""

from __future__ import annotations

import argparse


def add_federation_args(ap: argparse.ArgumentParser) -> None:
    """--rounds, --local-steps, --batch-size, --lr, --clients, --alpha."""
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.3)
