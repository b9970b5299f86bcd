"""The study page's grid-coverage table (bench/study_real.py), which its status rests on."""

import pandas as pd

from bench.study_real import coverage_lines


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
