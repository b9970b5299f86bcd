"""A model's plots in its parent run: the radial landscape (Xu Fig. 1-2) and loss vs SQNR and size."""

from __future__ import annotations

from pipelines.measure.landscape import Landscape
from pipelines.measure.landscape_run import directions_for, log_profile, snr_grid
from pipelines.sweep.config import SweepConfig


def log_landscape(mlflow, model, targets, windows, config: SweepConfig, name: str) -> None:
    """The typical radial profile (3 seeded random directions) as CSV and plot (Xu Fig. 1–2)."""

    directions, _ = directions_for(model, targets, [config.seed + i for i in range(3)], [])
    land = Landscape(model, targets, windows, config.batch_size)
    points = land.profile(directions, snr_grid(config.landscape_step_db, 40.0))
    log_profile(mlflow, points, f"{name}: radial loss landscape")


def log_variant_plots(mlflow, name, results, fp) -> None:
    """NLL vs SQNR (Xu Fig. 3) and NLL vs weight bytes (Xu Fig. 6) of a model's variants ({run name: metrics})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(run.split(" · ")[1], run.split(" · ")[2], m) for run, m in results.items() if m]
    if not rows:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    # Xu et al.'s convention: hollow markers RTN, filled markers GPTQ.
    for method, color, face in (("rtn", "C0", "none"), ("gptq", "C1", "C1")):
        pts = [(m["sqnr_db"], m["nll"], m.get("bytes"), f) for f, meth, m in rows if meth == method]
        if not pts:
            continue
        style = {"marker": "o", "edgecolors": color, "facecolors": face, "label": method.upper()}
        left.scatter([p[0] for p in pts], [p[1] for p in pts], **style)
        with_bytes = [p for p in pts if p[2] is not None]
        right.scatter([p[2] / 1e6 for p in with_bytes], [p[1] for p in with_bytes], **style)
        for x, y, _, fmt in pts:
            left.annotate(fmt, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for ax in (left, right):
        ax.axhline(fp.nll, color="k", lw=0.8, ls="--", label="fp")
        ax.set_ylabel("NLL (nats/token)")
        ax.legend()
    left.set_xlabel("SQNR (dB)")
    left.set_title(f"{name}: loss vs SQNR")
    right.set_xlabel("weights (MB)")
    right.set_title(f"{name}: loss vs size")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/nll_vs_sqnr_and_bytes.png")
    plt.close(fig)
    # the plotted points as text (not log_table: its tag write races when two sweeps end together)
    lines = ["format,method,sqnr_db,nll,bytes"] + [
        f"{f},{meth},{m['sqnr_db']},{m['nll']},{m.get('bytes', '')}" for f, meth, m in sorted(rows, key=lambda r: r[:2])]
    mlflow.log_text("\n".join(lines) + "\n", "plots/variants.csv")
