"""The report's architecture diagram, drawn with matplotlib (no hand-made image files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt                          # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch   # noqa: E402

BOXES = {   # name: (x, y, w, h, label)
    "ns": (3.6, 6.1, 3.6, 0.9, "Pyro5 name server\nmarket.warehouse · market.trader.<n>"),
    "peers": (0.1, 2.6, 2.5, 2.0, "buyer and seller peers\n(one process each)\n\nretry with the same\nrequest_id until final"),
    "t1": (4.0, 3.9, 2.8, 1.3, "trader 1 (elected peer)\nsync | TTL cache + versions"),
    "t2": (4.0, 2.1, 2.8, 1.3, "trader 2 (elected peer)\nsync | TTL cache + versions"),
    "rep": (4.0, 0.2, 2.8, 1.2, "trader n (replica)\nlaunched by the autoscaler"),
    "wh": (8.2, 2.4, 2.7, 2.5, "warehouse\nSQLite WAL, FULL\ninventory + version\nledger by request_id\nepochs (fencing)\ngroup commit"),
}
ARROWS = [  # (from, to, label, style)
    ("peers", "t1", "buy / sell", "-|>"), ("peers", "t2", "", "-|>"), ("peers", "rep", "", "-|>"),
    ("t1", "wh", "apply(rows)\nrevalidate", "-|>"), ("t2", "wh", "", "-|>"), ("rep", "wh", "", "-|>"),
    ("t1", "t2", "heartbeats", "<|-|>"),
    ("t1", "ns", "register", "-|>"), ("wh", "ns", "register", "-|>"), ("peers", "ns", "look up", "-|>"),
]


def _anchor(name: str, towards: str) -> tuple[float, float]:
    x, y, w, h, _ = BOXES[name]
    tx, ty, tw, th, _ = BOXES[towards]
    cx, cy, ox, oy = x + w / 2, y + h / 2, tx + tw / 2, ty + th / 2
    if abs(ox - cx) > abs(oy - cy) * 1.2:
        return (x + w if ox > cx else x, cy)
    return (cx, y + h if oy > cy else y)


def draw(path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8.5, 5.4))
    ax.set_xlim(0, 11.1)
    ax.set_ylim(0, 7.9)
    ax.axis("off")
    for name, (x, y, w, h, label) in BOXES.items():
        color = {"ns": "#e8eef8", "wh": "#f8efe0", "peers": "#eef6ea"}.get(name, "#f1f1f1")
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="#444"))
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=8)
    for a, b, label, style in ARROWS:
        p, q = _anchor(a, b), _anchor(b, a)
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle=style, mutation_scale=10, color="#333",
                                     linewidth=0.9))
        if label:
            ax.text((p[0] + q[0]) / 2, (p[1] + q[1]) / 2 + 0.12, label, fontsize=7,
                    ha="center", color="#222", backgroundcolor="white")
    ax.text(0.1, 7.85, "ring election among the peers picks N_t traders; a survivor fences,\n"
            "unlists and announces a dead trader; the coordinator launches replicas",
            fontsize=7.5, va="top", color="#333")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
