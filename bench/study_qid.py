"""The micro-suite's QiD study: fit Ouyang et al.'s law on a swept zoo, plot their Figs. 3–5.

Reads only the tracking store (zoo runs + sweep runs), writes the generated section of
docs/micro-suite.md and its figures under docs/img/, and logs the same figures and fits to an
MLflow run in experiment `ptq-studies`. Regenerate with:

    python bench/study_qid.py --tracking-uri sqlite:///PATH/mlflow.db --family zoo-cpu-small
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from bench.results_file import machine, write_section  # noqa: E402
from registry.laws.published import PUBLISHED_QID  # noqa: E402

COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")


def training_rows(client, family: str):
    """Zoo checkpoint runs of one family: size, N, D, training and validation losses."""
    import pandas as pd

    experiment = client.get_experiment_by_name("ptq-zoo")
    runs = client.search_runs([experiment.experiment_id], f"tags.`ptq.zoo.family` = '{family}' and "
                              "attributes.status = 'FINISHED'", max_results=10_000)
    return pd.DataFrame([{"size": r.data.params["size"], **{k: r.data.metrics[k] for k in (
        "non_embedding_params", "train_tokens", "train_loss", "nll_val", "bpb_val")}} for r in runs])


def fit_laws(qid, max_bits: int, n_bootstrap: int):
    from registry.laws.fitting import fit_qid_from_table

    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        fits = fit_qid_from_table(qid[qid["P"] <= max_bits], n_bootstrap=n_bootstrap)
    return fits, [str(w.message) for w in skipped]


def plot_training(train, path: Path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for color, (size, rows) in zip(COLORS, train.sort_values("non_embedding_params").groupby("size", sort=False)):
        rows = rows.sort_values("train_tokens")
        ax.plot(rows["train_tokens"], rows["nll_val"], "o-", color=color,
                label=f"{size}: N = {rows['non_embedding_params'].iloc[0] / 1e6:.3g} M")
    ax.set(xscale="log", xlabel="training tokens D", ylabel="validation NLL (nats/token)",
           title="Micro-suite training: loss falls with D and with N")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _law(fit, N, D, P):
    import numpy as np

    return fit["k"] * np.asarray(D, float) ** fit["beta"] / (np.asarray(N, float) ** fit["alpha"]
                                                              * np.asarray(P, float) ** fit["gamma"])


def plot_versus(qid, fits, method: str, x: str, lines: str, panels: str, path: Path, title: str):
    """ΔqLoss against `x`, one line per value of `lines`, one panel per value of `panels`, per family."""
    import matplotlib.pyplot as plt
    import numpy as np

    data = qid[(qid["method"] == method) & (qid["delta_nll"] > 0)]
    families = sorted(data["family"].unique())
    panel_values = sorted(data[panels].unique())
    fig, axes = plt.subplots(len(families), len(panel_values), figsize=(3.3 * len(panel_values), 3 * len(families)),
                             squeeze=False, sharey="row")
    label = {"N": "N (non-embedding params)", "D": "training tokens D", "P": "bits P"}
    for r, family in enumerate(families):
        fit = fits.get(f"{method}/{family}")
        for c, value in enumerate(panel_values):
            ax = axes[r][c]
            panel = data[(data["family"] == family) & (data[panels] == value)]
            for color, (line, rows) in zip(COLORS, panel.groupby(lines)):
                rows = rows.sort_values(x)
                ax.plot(rows[x], rows["delta_nll"], "o", color=color, ms=4,
                        label=f"{lines}={line:.3g}" if lines != "P" else f"P={line:g}")
                if fit:
                    grid = np.geomspace(rows[x].min(), rows[x].max(), 20)
                    args = {"N": rows["N"].iloc[0], "D": rows["D"].iloc[0], "P": rows["P"].iloc[0], x: grid}
                    ax.plot(grid, _law(fit, args["N"], args["D"], args["P"]), "--", color=color, lw=1)
            ax.set(xscale="log", yscale="log", title=f"{method}/{family}, {panels}={value:.3g}", xlabel=label[x])
            if c == 0:
                ax.set_ylabel("ΔqLoss (nats/token)")
            ax.legend(fontsize=6)
    fig.suptitle(title + " — points measured, dashed: fitted QiD law", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ci(fit, name):
    lo, hi = fit["intervals"].get(name, (float("nan"), float("nan")))
    return f"{fit[name]:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(fits, skipped, train, qid, family, max_bits, images, command) -> str:
    sizes = train.groupby("size")["non_embedding_params"].first().sort_values()
    tokens = sorted(train["train_tokens"].unique())
    lines = [f"Generated by `{command}` on {machine()}.", "",
             f"Suite `{family}`: {len(sizes)} sizes, N = {sizes.min():,.0f} … {sizes.max():,.0f} non-embedding "
             f"parameters ({sizes.max() / sizes.min():.0f}×); {len(tokens)} checkpoints, D = {tokens[0]:,.0f} … "
             f"{tokens[-1]:,.0f} tokens; {len(qid)} quantized variants (RTN and GPTQ).", "",
             f"### Fitted QiD law, P ≤ {max_bits} (95 % bootstrap intervals) next to Ouyang et al.", "",
             "| fit | rows (dropped ΔqLoss ≤ 0) | k | α (N) | β (D) | γ (P) | RMS log error |",
             "|---|---|---|---|---|---|---|",
             f"| Ouyang et al. (Pythia, GPTQ) | – | {PUBLISHED_QID['k']} | {PUBLISHED_QID['alpha']} | "
             f"{PUBLISHED_QID['beta']} | {PUBLISHED_QID['gamma']} | – |"]
    for key, fit in sorted(fits.items()):
        lines.append(f"| {key} | {fit['n_rows']} ({fit['n_dropped']}) | {fit['k']:.3g} | {_ci(fit, 'alpha')} | "
                     f"{_ci(fit, 'beta')} | {_ci(fit, 'gamma')} | {fit['rmse_log']:.2f} |")
    lines += [""] + [f"- skipped: {s}" for s in skipped]
    lines += ["", "### ΔqLoss at the largest D (nats/token), GPTQ", "",
              "| N | " + " | ".join(f"{fam} P={p:g}" for fam in sorted(qid["family"].unique())
                                      for p in sorted(qid["P"].unique())) + " |",
              "|---|" + "---|" * (qid["family"].nunique() * qid["P"].nunique())]
    last = qid[(qid["D"] == qid["D"].max()) & (qid["method"] == "gptq")]
    for n, rows in last.groupby("N"):
        cells = []
        for fam in sorted(qid["family"].unique()):
            for p in sorted(qid["P"].unique()):
                hit = rows[(rows["family"] == fam) & (rows["P"] == p)]["delta_nll"]
                cells.append(f"{hit.iloc[0]:+.4f}" if len(hit) else "–")
        lines.append(f"| {n:,.0f} | " + " | ".join(cells) + " |")
    lines += ["", "### Training (validation NLL, nats/token)", "",
              "| size | N | " + " | ".join(f"D={d / 1e3:,.0f}k" for d in tokens) + " |",
              "|---|---|" + "---|" * len(tokens)]
    for size, n in sizes.items():
        rows = train[train["size"] == size].set_index("train_tokens")["nll_val"]
        lines.append(f"| {size} | {n:,.0f} | " + " | ".join(f"{rows.get(d, float('nan')):.3f}" for d in tokens) + " |")
    lines += [""] + [f"![{name}](img/{path.name})" for name, path in images]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    parser.add_argument("--family", default="zoo-cpu-small")
    parser.add_argument("--experiment", action="append", default=None, help="sweep experiment(s) [ptq-sweep]")
    parser.add_argument("--max-bits", type=int, default=4, help="fit on P ≤ this (Ouyang fit 2-4 bits)")
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--docs", default=str(ROOT / "docs" / "micro-suite.md"))
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import mlflow

    from registry.predictor.feature_table import (
        TableQuery,
        build_feature_table,
        qid_table,
    )
    from store.experiments import experiment_id
    from store.keys import use_store

    use_store(args.tracking_uri)
    client = mlflow.MlflowClient()
    experiments = tuple(args.experiment or ("ptq-sweep",))
    qid = qid_table(build_feature_table(TableQuery(experiments, (args.family,)), client))
    train = training_rows(client, args.family)
    fits, skipped = fit_laws(qid, args.max_bits, args.bootstrap)
    docs = Path(args.docs)
    img = docs.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    stem = args.family
    images = [("validation loss vs D", img / f"{stem}-training.png"),
              ("ΔqLoss vs D (Ouyang Fig. 3)", img / f"{stem}-qid-vs-D.png"),
              ("ΔqLoss vs N (Ouyang Fig. 4)", img / f"{stem}-qid-vs-N.png"),
              ("ΔqLoss vs P (Ouyang Fig. 5)", img / f"{stem}-qid-vs-P.png")]
    plot_training(train, images[0][1])
    low = qid[qid["P"] <= args.max_bits]
    plot_versus(low, fits, "gptq", "D", "N", "P", images[1][1], "ΔqLoss vs training tokens")
    plot_versus(low[low["D"].isin(sorted(low["D"].unique())[::3])], fits, "gptq", "N", "D", "P", images[2][1],
                "ΔqLoss vs model size")
    plot_versus(qid[qid["D"] == qid["D"].max()], fits, "gptq", "P", "N", "D", images[3][1],
                "ΔqLoss vs bits, largest D")
    command = f"python bench/study_qid.py --tracking-uri {args.tracking_uri} --family {args.family}"
    write_section(docs, f"{args.family}-study", markdown(fits, skipped, train, qid, args.family, args.max_bits,
                                                         images, command))
    mlflow.set_experiment(experiment_id=experiment_id(client, "ptq-studies", "Studies regenerated from the runs."))
    with mlflow.start_run(run_name=f"qid-{args.family}"):
        mlflow.log_params({"family": args.family, "max_bits": args.max_bits, "bootstrap": args.bootstrap,
                           "variants": len(qid)})
        mlflow.log_dict(fits, "qid_fits.json")
        mlflow.log_table(qid, "qid_table.json")
        for _, path in images:
            mlflow.log_artifact(str(path), "figures")
    print(json.dumps({"fits": fits, "skipped": skipped, "docs": str(docs)}, indent=2))


if __name__ == "__main__":
    main()
