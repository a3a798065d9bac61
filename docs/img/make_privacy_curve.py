#!/usr/bin/env python3
"""Draws docs/img/privacy_curve.png from the walkthrough's test accuracy at several ε.

The numbers come from `cargo run --release --example image_classify -- --dp-epsilon E --quiet`
(10 epochs, seed 1, δ = 1e-5, C = 1) and, for the dashed line, the same without --dp-epsilon.

    pip install matplotlib
    python3 docs/img/make_privacy_curve.py
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker

EPSILON = [0.5, 1, 2, 3, 4, 8]
ACCURACY = [84.40, 89.55, 91.25, 92.05, 92.60, 93.50]  # the runs listed in docs/privacy.md
NON_PRIVATE = 98.40

points = [(e, a) for e, a in zip(EPSILON, ACCURACY) if a is not None]
fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="tab:red", label="DP-SGD (δ = 1e-5, C = 1)")
ax.axhline(NON_PRIVATE, color="tab:blue", linestyle="--", label=f"not private ({NON_PRIVATE:.2f} %)")
ax.set_xscale("log")
ax.set_xticks(EPSILON)
ax.set_xticklabels([str(e) for e in EPSILON])
ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
ax.set_xlabel("privacy budget ε (smaller is more private)")
ax.set_ylabel("test accuracy (%)")
ax.set_title("Bundled digits, 10 epochs: accuracy against ε")
ax.grid(True, alpha=0.3)
ax.legend(loc="lower right")
fig.tight_layout()
out = Path(__file__).resolve().parent / "privacy_curve.png"
fig.savefig(out)
print(f"wrote {out}")
