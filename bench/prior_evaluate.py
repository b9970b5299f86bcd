"""The prior held out by family: its metrics into bench/RESULTS.md and the plot into docs/img.

    python bench/prior_evaluate.py                       # a fresh store in a temp folder: seed, fit, judge
    python bench/prior_evaluate.py --tracking-uri URI    # a store already seeded (`advisor seed`)

Reads what `advisor prior evaluate --json` reads (the champion's logged evaluation), so every
figure here is the one the CLI shows. The goals of issue 27 are checked per (bits, method) on
the rows every predictor answers (the QiD laws need the training tokens); coverage is each
predictor's own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results_file import machine, write_section

PREDICTORS = ("heldout_delta_nll", "qid_published", "qid_refit")
NAMES = {"heldout_delta_nll": "prior", "qid_published": "QiD published", "qid_refit": "QiD refitted"}


def _advisor(*args, uri) -> str:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PTQ_ADVISOR_ANSWER_CACHE": "off"}
    done = subprocess.run([sys.executable, "-m", "advisor", *args, "--tracking-uri", uri], capture_output=True,
                          text=True, env=env, cwd=ROOT, check=False)
    if done.returncode:
        raise SystemExit(f"advisor {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _rank_corr(a, b) -> float:
    import pandas as pd

    return float(pd.Series(a).rank().corr(pd.Series(b).rank())) if len(a) > 2 else float("nan")


def common_metrics(rows, bits, method) -> dict:
    """fold error and Spearman of each predictor on the rows of (bits, method) that all three answer."""
    chosen = [r for r in rows if r["bits"] == bits and r["method"] == method
              and all(r.get(p) is not None for p in PREDICTORS)]
    out = {"n": len(chosen)}
    for p in PREDICTORS:
        errors = sorted(abs(math.log(max(r[p], 1e-3)) - math.log(max(r["observed_delta_nll"], 1e-3))) for r in chosen)
        median = errors[len(errors) // 2] if len(errors) % 2 else sum(errors[len(errors) // 2 - 1:len(errors) // 2 + 1]) / 2
        out[p] = {"fold": math.exp(median) if errors else float("nan"),
                  "spearman": _rank_corr([r[p] for r in chosen], [r["observed_delta_nll"] for r in chosen])}
    return out


def section(report: dict, versions: str, command: str) -> str:
    m, rows = report["metrics"], report["rows"]
    own = {(x["bits"], x["method"], x["predictor"]): x for x in m["by_bits_method"]}
    lines = ["## The prior held out by family (`bench/prior_evaluate.py`)", "",
             (f"Machine: {machine()}. Command: `{command}`; the figures are `advisor prior evaluate --json` of "
             f"{report['prior']} ({versions}). Each of the {len(rows)} rows (published ΔNLL = ln(ppl_q/ppl_fp), "
             "measured ΔNLL = NLL_q − NLL_fp, nats/token) is predicted by a fit that never saw its model family; "
             "QiD published = Ouyang et al.'s GPTQ/Pythia law, QiD refitted = the same law refitted per method "
             "on the other families' rows. Intervals: 90 % split-conformal on held-out log errors, per method × "
             "(≤ 2 bits, 3 bits, ≥ 4 bits), each family's width from the other families. The champion is the "
             "recipe with the lower mean |ln(pred/obs)| on the 3- and 4-bit rows."), "",
             (f"Overall: median fold error {m['summary']['median_fold_error']:.2f}×, mean |ln(pred/obs)| "
             f"{m['summary']['mean_abs_log_error']:.3f} (3 and 4 bits: "
             f"{m['summary'].get('mean_abs_log_error_3_4_bits', float('nan')):.3f}), 90 % interval coverage {m['summary']['coverage']:.1%}; "
             f"RTN predicted ≥ GPTQ on {m['rtn_vs_gptq']['rtn_ge_gptq']:.0%} of the {m['rtn_vs_gptq']['pairs']} "
             "(model, format, corpus, source) published with both (refitted QiD: "
             f"{m['rtn_vs_gptq_qid_refit']['rtn_ge_gptq']:.0%}; the published law gives both methods one value)."), "",
             "| bits | method | predictor | rows | median fold error | MAE ΔNLL (nats/token) | Spearman | 90 % coverage |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for x in m["by_bits_method"]:
        if x["n"]:
            lines.append(f"| {x['bits']} | {x['method']} | {x['predictor']} | {x['n']} | {x['fold_error']:.2f}× | "
                         f"{x['mae']:.3f} | {'-' if x['spearman'] is None else format(x['spearman'], '.2f')} | "
                         f"{x['coverage']:.0%} |")
    lines += ["", ("Goals (issue 27) at 3 and 4 bits, on the rows all three predictors answer (fold error, Spearman) "
              "and on each predictor's own rows (coverage):"), "",
              ("| bits | method | rows | fold error prior / QiD pub / QiD refit (goal ≤ 1.5×) | Spearman (goal ≥ 0.9) "
              "| coverage prior (goal 85–95 %) | prior beats both QiD on fold and ρ |"), "|---:|---|---:|---|---|---:|---|"]
    for bits in (3, 4):
        for method in ("rtn", "gptq"):
            c = common_metrics(rows, bits, method)
            if not c["n"]:
                continue
            folds = " / ".join(f"{c[p]['fold']:.2f}×" for p in PREDICTORS)
            rhos = " / ".join(f"{c[p]['spearman']:.2f}" for p in PREDICTORS)
            cover = own.get((bits, method, "prior"), {}).get("coverage")
            beats = all(c["heldout_delta_nll"]["fold"] < c[p]["fold"] and
                        c["heldout_delta_nll"]["spearman"] > c[p]["spearman"] for p in PREDICTORS[1:])
            lines.append(f"| {bits} | {method} | {c['n']} | {folds} | {rhos} | "
                         f"{'-' if cover is None else format(cover, '.0%')} | {'yes' if beats else 'no'} |")
    lines += ["", "![held out by family](../docs/img/prior-heldout.png)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=None, help="a seeded store (default: seed a fresh one)")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "img" / "prior-heldout.png"))
    args = parser.parse_args()
    command = "python bench/prior_evaluate.py" + (f" --tracking-uri {args.tracking_uri}" if args.tracking_uri else "")
    with tempfile.TemporaryDirectory() as tmp:
        uri = args.tracking_uri or f"sqlite:///{tmp}/mlflow.db"
        if not args.tracking_uri:
            print(_advisor("seed", uri=uri), end="")
        report = json.loads(_advisor("prior", "evaluate", "--json", uri=uri))
    import matplotlib

    matplotlib.use("Agg")
    from registry.prior.plot import heldout_figure

    fig = heldout_figure(report["rows"], f"{report['prior']}: ΔNLL with the model family held out "
                                         "(grey: published QiD law)", baseline="qid_published")
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=130)
    data = report["data_versions"]
    body = section(report, f"{report['recipe']['kind']}; published data {data['published']}, measured data "
                           f"{', '.join(data['measured']) or 'none'}", command)
    write_section(args.results, "prior-evaluate", body)
    print(body)


if __name__ == "__main__":
    main()
