"""Argument types shared by several commands."""

from __future__ import annotations

import argparse

__all__ = ["seed_arg"]


def seed_arg(text: str) -> int:
    """A seed torch and numpy both take: an integer from 0 to 2**63 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {text!r} is not an integer") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"seed {text[:30]!r} is out of range; expected 0 to 2**63 - 1")
    return value
