"""The study page's grid-coverage table (bench/study_real.py), which its status rests on."""

import numpy as np
import pandas as pd
import pytest

from bench.study_real import UNRECORDED, cost_lines, coverage_lines


def test_coverage_names_each_model_per_grid_cell_and_counts_the_pairs():
    rows = [("SmolLM2", "smollm2", f) for f in ("mxint4_32", "mxint6_128", "int8_tens", "mxint3_64")]
    rows += [("gemma", "gemma3", f) for f in ("mxint4_32", "mxfp3_e1m1_16")]
    rows += [("tiny", "zoo-cpu", "mxint4_64")]  # not a held-out family: not counted
    table = pd.DataFrame(rows, columns=["model", "model_family", "format"])
    lines = coverage_lines(table, ["smollm2", "gemma3"])
    assert lines[0].startswith("Grid coverage: 6 of 84 (model, format) pairs of the study's 42 formats")
    assert "G = gemma (2), S = SmolLM2 (4)." in lines[0]
    cells = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ")[1:] for line in lines if line.startswith("| mx")}
    assert cells["mxint4"] == ["·", "GS", "·", "·"]
    assert cells["mxint6"] == ["·", "·", "·", "S"]
    assert cells["mxfp3_e1m1"] == ["G", "·", "·", "·"]
    assert lines[-2] == "| measured by | · | · | · | · | · | S |"  # int8_tens last of the classic ints
    # mxfp3_e1m1 is mxint3 bit for bit: the unswept cell SmolLM2 measured as mxint3 is named, no other
    same = [line for line in lines if line.startswith("mxfp3_e1m1 gives the same weights")]
    assert len(same) == 1 and same[0].endswith("so 1 of the unswept mxfp3_e1m1 pairs are known from mxint3: S K = 64.")


def test_sweep_cost_is_per_model_and_machine_and_counts_only_formats_timed_with_both_methods():
    epyc, old = "AMD EPYC, 2 logical cores, 2 torch threads", UNRECORDED
    rows = [("Qwen", f, m, epyc, s) for f, s in (("mxint4_32", 240), ("mxint4_64", 300), ("mxint4_128", 360))
            for m in ("rtn", "gptq")]
    rows += [("Qwen", "mxint2_16", "rtn", epyc, 100)]  # GPTQ not timed yet: not a format's cost
    rows += [("Qwen", "int8_chan", m, old, 600) for m in ("rtn", "gptq")]
    rows += [("tiny", "mxint4_32", m, epyc, 1) for m in ("rtn", "gptq")]  # not a held-out model
    runs = pd.DataFrame(rows, columns=["model", "format", "method", "machine", "seconds"])
    lines = cost_lines(runs, {"Qwen"}, grid_size=42)
    table = [line for line in lines if line.startswith("| Qwen")]
    # per format: rtn + gptq seconds, so 8, 10 and 12 minutes on the EPYC; 20 on the unrecorded one
    assert table == [f"| Qwen | {epyc} | 3 | 10.0 | 8.0–12.0 | 7.0 |", f"| Qwen | {old} | 1 | 20.0 | 20.0–20.0 | 14.0 |"]
    assert cost_lines(runs, {"nobody"}, grid_size=42) == []


def _scores(mae: dict, rho: float = 0.9) -> dict:
    from bench.study_real import CHOOSERS

    return {c: {"mae": mae.get(c, 1.0), "spearman": mae.get(c + "_rho", rho), "rows": 10} for c in CHOOSERS}


def test_goals_name_the_deployed_predictor_and_the_best_tree_and_mark_each_goal():
    from bench.study_real import goal_lines

    all_rows = {"gemma3": _scores({"rf_frac": 0.5, "xgb_frac": 0.3, "nll_rtn": 0.4, "qid_law": float("nan"),
                                   "rf_frac_rho": 0.96}),
                "qwen2.5": _scores({"rf_frac": 0.2, "xgb": 0.1, "nll_rtn": 0.15, "qid_law": 0.12, "xgb_rho": 0.97})}
    fine = {"gemma3": _scores({"rf_frac": 0.01, "nll_rtn": 0.03, "qid_law": 0.05}),
            "qwen2.5": _scores({"rf_frac": 0.3, "xgb_rtn": 0.015, "nll_rtn": 0.01, "qid_law": 0.4})}
    regrets = {c: {"median": 0.0, "budgets": 50} for c in ("rf", "xgb", "rf_rtn", "rf_frac", "xgb_frac", "rf_share")}
    regrets["xgb_rtn"] = {"median": 0.063, "budgets": 50}
    lines = goal_lines({"all rows": all_rows, "≥ 5 bits": fine}, regrets, "rf_frac")
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")[2:]]
            for line in lines if line.startswith("| ") and not line.startswith("| goal")}
    assert rows[("MAE ≤ 0.02 nats, all rows", "deployed RF·frac")] == ["0.500 ✗", "0.200 ✗"]
    assert rows[("MAE ≤ 0.02 nats, all rows", "best tree")] == ["0.300 XGB·frac ✗", "0.100 XGB ✗"]
    assert rows[("MAE ≤ 0.02 nats, ≥ 5 bits", "deployed RF·frac")] == ["0.010 ✓", "0.300 ✗"]
    assert rows[("MAE ≤ 0.02 nats, ≥ 5 bits", "best tree")] == ["0.010 RF·frac ✓", "0.015 XGB·rtn ✓"]
    assert rows[("Spearman ρ ≥ 0.95, all rows", "deployed RF·frac")] == ["0.960 ✓", "0.900 ✗"]
    assert rows[("Spearman ρ ≥ 0.95, all rows", "best tree")] == ["0.960 RF·frac ✓", "0.970 XGB ✓"]
    # a baseline without a value (QiD needs the training tokens) is not one to beat
    assert rows[("beats every baseline's MAE, all rows", "deployed RF·frac")] == \
        ["0.500 vs NLL_rtn 0.400 ✗", "0.200 vs QiD 0.120 ✗"]
    assert rows[("beats every baseline's MAE, all rows", "best tree")] == \
        ["0.300 XGB·frac vs NLL_rtn 0.400 ✓", "0.100 XGB vs QiD 0.120 ✓"]
    assert rows[("beats every baseline's MAE, ≥ 5 bits", "best tree")] == \
        ["0.010 RF·frac vs NLL_rtn 0.030 ✓", "0.015 XGB·rtn vs NLL_rtn 0.010 ✗"]
    assert lines[-2] == ("Median regret ≤ 0.01 nats over the 50 budgets of all held-out models: deployed RF·frac "
                         "0.0000 ✓; 6 of 7 trees meet it (not XGB·rtn 0.063).")
    # where the share recipe answers every row by share·RTN it ties it by construction: judged on the others
    fine["gemma3"]["rf_share"] = dict(fine["gemma3"]["rtn_share"])
    tied = goal_lines({"≥ 5 bits": fine}, regrets, "rf_share")
    assert "| beats every baseline's MAE, ≥ 5 bits | deployed RF<3·share | 1.000 = share·RTN here, vs NLL_rtn 0.030 ✗ |" \
        in "\n".join(tied)
    # without a registered champion only the best tree is shown
    assert not any("deployed" in line for line in goal_lines({"all rows": all_rows}, regrets, None)[2:])
    # Spearman is read on each subset asked for, and only those
    both = goal_lines({"all rows": all_rows, "≥ 5 bits": fine}, regrets, "rf_frac", spearman_on=["all rows", "≥ 5 bits"])
    assert [line.split("|")[1].strip() for line in both if "Spearman" in line] == \
        ["Spearman ρ ≥ 0.95, all rows"] * 2 + ["Spearman ρ ≥ 0.95, ≥ 5 bits"] * 2
    assert not any("Spearman ρ ≥ 0.95, ≥ 5 bits" in line for line in lines)


def test_the_rtn_share_baseline_scales_each_rows_rtn_damage_by_its_bands_median_share():
    from bench.study_real import rtn_share

    train = pd.DataFrame({"precision": [4, 4, 4, 3, 2], "nll_fp": [2.0] * 5,
                          "nll_rtn": [2.4, 2.2, 2.1, 3.0, 9.0], "nll_gptq": [2.2, 2.05, 2.03, 2.5, 9.0]})
    test = pd.DataFrame({"precision": [8, 4, 3, 2, 4], "nll_fp": [1.0] * 5, "nll_rtn": [1.001, 1.2, 2.0, 5.0, 1.4]})
    # shares: ≥ 4 bits median(0.5, 0.25, 0.3) = 0.3, 3 bits 0.5, ≤ 2 bits 1.0; an increase below the
    # floor (8 bits: 0.001) counts as the floor, 0.005
    assert rtn_share(train, test).round(6).tolist() == [1.0015, 1.06, 1.5, 5.0, 1.12]
    # a band the training rows lack takes the median of the bands they have
    assert rtn_share(train[train["precision"] == 4], test).round(6).tolist() == [1.0015, 1.06, 1.3, 2.2, 1.12]


def test_the_share_split_table_holds_each_family_out_for_every_split():
    from bench.study_real import SHARE_BITS, SHARE_SPLITS, share_split_lines
    from registry.predictor.feature_table import FEATURES

    rng = np.random.default_rng(0)
    frames = []
    for family, share in (("a", 0.2), ("b", 0.3), ("c", 0.5)):
        frame = pd.DataFrame(rng.uniform(1, 2, size=(12, len(FEATURES))), columns=list(FEATURES))
        frame["precision"] = np.tile([2.0, 3.0, 4.0, 8.0], 3)
        frame["nll_rtn"] = frame["nll_fp"] + rng.uniform(0.1, 1.0, 12)
        frame["nll_gptq"] = frame["nll_fp"] + share * (frame["nll_rtn"] - frame["nll_fp"])
        frame["bytes"] = rng.uniform(1e6, 2e6, 12)
        frame["model_family"], frame["model"] = family, family + "-1"
        frames.append(frame)
    lines = share_split_lines(pd.concat(frames, ignore_index=True), ["a", "b", "c"])
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| trees")]
    assert len(body) == len(SHARE_SPLITS)
    assert body[0].startswith("| forest only | ") and f"| {SHARE_BITS} bits (deployed) | " in "\n".join(body)
    # shares 0.2 / 0.3 / 0.5: held out, a is predicted with median(0.3, 0.5) = 0.4, b 0.35, c 0.25
    every = next(line for line in body if line.startswith("| 2 bits (every band)"))
    cells = [float(c) for c in every.strip("|").split("|")[1:]]
    gaps = {f: (fr["nll_rtn"] - fr["nll_fp"]) for f, fr in zip("abc", frames)}
    expected_all = np.mean(np.concatenate([abs(0.4 - 0.2) * gaps["a"], abs(0.35 - 0.3) * gaps["b"],
                                           abs(0.25 - 0.5) * gaps["c"]]))
    assert cells[0] == pytest.approx(expected_all, abs=1e-4)
