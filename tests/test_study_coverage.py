"""The study page's grid-coverage table (bench/study_real.py), which its status rests on."""

import pandas as pd

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
