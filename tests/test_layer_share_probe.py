"""bench/layer_share_probe.py: GPTQ's layer-output error over RTN's, and the measured NLL share."""

import pytest
from mlflow import MlflowClient

from bench.layer_share_probe import layer_ratios, measured_shares
from registry.measured_data import export
from registry.predictor.feature_table import TableQuery, build_feature_table
from store.keys import use_store


def test_gptq_leaves_a_fraction_of_rtns_layer_output_error(trained_model_dir, corpus_file):
    ratios = layer_ratios(str(trained_model_dir), None, ("mxint4_32", "mxint3_32"), windows=4, seq_len=64,
                          corpus=str(corpus_file))
    assert set(ratios) == {"mxint4_32", "mxint3_32"}
    # GPTQ minimises exactly this error column by column, starting from RTN's choice for the first
    assert all(0 < r < 1 for r in ratios.values()), ratios


def test_measured_shares_are_gptqs_share_of_rtns_increase(sweep_store, tmp_path):
    uri = f"sqlite:///{sweep_store}"
    path = tmp_path / "measured.json.gz"
    export(MlflowClient(uri), ("ptq-sweep",), path, note="test")
    shares = measured_shares(path)
    use_store(uri)
    table = build_feature_table(TableQuery(), MlflowClient(uri))
    assert len(shares) == len(table)
    for row in table.itertuples():
        expected = (row.nll_gptq - row.nll_fp) / max(row.nll_rtn - row.nll_fp, 0.005)
        assert shares[(row.model, row.format)] == pytest.approx(expected, rel=1e-9)
