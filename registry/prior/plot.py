"""The held-out plot: each row's ΔNLL predicted with its family held out vs the published or
measured value, log-log (matplotlib; the caller picks the backend)."""

from __future__ import annotations

import numpy as np

FLOOR = 1e-3  # nats/token: smaller values are drawn at the floor, as the prior fits them


def heldout_figure(rows: list[dict], title: str, baseline: str | None = None):
    """A matplotlib Figure; `baseline` ('qid_published' / 'qid_refit') adds that predictor in grey."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    observed = np.maximum([r["observed_delta_nll"] for r in rows], FLOOR)
    if baseline:
        other = np.array([r.get(baseline) or np.nan for r in rows], dtype=float)
        ax.scatter(observed, np.maximum(other, FLOOR), s=6, color="0.75", label=baseline.replace("_", " "))
    families = sorted({r["family"] for r in rows})
    cmap = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    for i, family in enumerate(families):
        for method, marker in (("rtn", "o"), ("gptq", "^")):
            pts = [r for r in rows if r["family"] == family and r["method"] == method]
            if pts:
                ax.scatter(np.maximum([p["observed_delta_nll"] for p in pts], FLOOR),
                           np.maximum([p["heldout_delta_nll"] for p in pts], FLOOR), s=12, marker=marker,
                           color=cmap(i % cmap.N), alpha=0.75, label=f"{family} {method}")
    low, high = FLOOR, max(float(np.max(observed)), 1.0) * 1.5
    grid = np.array([low, high])
    ax.plot(grid, grid, "k-", linewidth=1)
    for factor in (1.5, 1 / 1.5):
        ax.plot(grid, grid * factor, "k:", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("observed ΔNLL, nats/token (published or measured)")
    ax.set_ylabel("predicted with the family held out")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=5.5, ncol=2, loc="upper left")
    fig.tight_layout()
    return fig
