"""Draw docs/flow.png, the README's picture of how edge-sdk's pieces fit.

    python scripts/draw_flow.py [--out docs/flow.png]

Needs matplotlib (the ``plot`` extra). The picture is data below (boxes, arrows): change it
here and redraw, never edit the PNG by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DEVICE, SERVER, TARGET = "#dbeafe", "#fde68a", "#d1fae5"

# (key, x, y, title, what it produces, command / API, lane colour)
BOXES = [
    ("profile", 1.2, 3.25, "1  profile the device", "CapabilityReport (JSON)", "edge-sdk profile", DEVICE),
    ("cluster", 3.9, 1.3, "2  cluster into tiers", "tier + submodel size\nper device (KDE)", "edge-sdk cluster", SERVER),
    ("plan", 6.6, 1.3, "3  plan each submodel", "SubmodelPlan: masks,\nchannels or blocks", "edge-sdk extract", SERVER),
    ("train", 9.3, 3.25, "4  extract + train locally", "Update: only what\nthe device holds", "train_local", DEVICE),
    ("merge", 12.0, 1.3, "5  merge into one\nglobal model", "per-element mean,\nrobust rules, FedTSA", "aggregate", SERVER),
    ("export", 14.5, 3.25, "6  export the submodel", "integer-only ONNX,\nQONNX / QCDQ + report", "edge-sdk export", TARGET),
]
# (from, to, label, curve)
ARROWS = [
    ("profile", "cluster", "report", 0.0),
    ("cluster", "plan", "size", 0.0),
    ("plan", "train", "plan + tensors", 0.0),
    ("train", "merge", "update", 0.0),
    ("merge", "plan", "next round", -0.2),
    ("merge", "export", "after the last round", 0.0),
]
W, H = 2.3, 1.45


def draw(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(13, 4.6), dpi=110)
    ax.set_xlim(-0.2, 15.9)
    ax.set_ylim(-0.1, 4.6)
    ax.axis("off")
    # lanes
    ax.axhspan(2.35, 4.55, color="#f1f5f9", zorder=0)
    ax.axhspan(-0.1, 2.2, color="#fffbeb", zorder=0)
    ax.text(-0.1, 4.5, "on each edge device (Raspberry Pi, Jetson, gateway, Zynq ARM core)", fontsize=9,
            color="#334155", va="top")
    ax.text(-0.1, -0.02, "on the server (edge-sdk simulate in one process, or a Flower ServerApp)", fontsize=9,
            color="#92400e", va="bottom")
    centre = {}
    for key, x, y, title, produces, command, colour in BOXES:
        ax.add_patch(FancyBboxPatch((x - W / 2, y - H / 2), W, H, boxstyle="round,pad=0.05,rounding_size=0.12",
                                    facecolor=colour, edgecolor="#334155", linewidth=1.2, zorder=2))
        ax.text(x, y + H / 2 - 0.12, title, ha="center", va="top", fontsize=9.5, weight="bold", zorder=3)
        ax.text(x, y - 0.05, produces, ha="center", va="center", fontsize=8.3, zorder=3)
        ax.text(x, y - H / 2 + 0.12, command, ha="center", va="bottom", fontsize=8.3, family="monospace",
                color="#1e3a8a", zorder=3)
        centre[key] = (x, y)
    for a, b, label, curve in ARROWS:
        (x0, y0), (x1, y1) = centre[a], centre[b]
        if curve:  # the round loop: under the two server boxes
            start, end = (x0 - W / 2 + 0.3, y0 - H / 2), (x1 + W / 2 - 0.3, y1 - H / 2)
            lx, ly = (x0 + x1) / 2, 0.05
        else:
            start = (x0 + W / 2, y0) if abs(y1 - y0) < 0.1 else (x0 + (W / 2 if x1 > x0 else -W / 2) * 0.6,
                                                                  y0 + (-H / 2 if y1 < y0 else H / 2))
            end = (x1 - W / 2, y1)
            lx, ly = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, linewidth=1.3,
                                     color="#334155", connectionstyle=f"arc3,rad={curve}", zorder=1))
        ax.text(lx, ly, label, ha="center", va="bottom", fontsize=8, style="italic", color="#334155", zorder=3,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
    fig.tight_layout(pad=0.2)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "flow.png")
    args = parser.parse_args()
    draw(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
