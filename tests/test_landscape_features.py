import math

import pytest
import torch

from pipelines.measure.evaluate_formats import measure_variant
from pipelines.measure.features import FeatureSettings
from pipelines.measure.landscape import (
    Landscape,
    difference_direction,
    random_direction,
    weight_norm,
)
from pipelines.measure.nll import evaluate_nll
from pipelines.quantize.formats import parse_format
from pipelines.quantize.rtn import find_weights, quantize_weight, rtn_quantized
from pipelines.sources.token_windows import calibration_windows, evaluation_windows


@pytest.fixture(scope="module")
def setup(trained_model_dir, docs_text):
    from pipelines.sources.model_source import load_model

    model, tok, _ = load_model(str(trained_model_dir))
    windows = evaluation_windows(tok, docs_text[-60000:], 64, max_windows=8)
    return model, tok, windows, find_weights(model)


def test_random_direction_is_a_seeded_unit_vector(setup):
    _, _, _, targets = setup
    a, b = random_direction(targets, 1), random_direction(targets, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert math.sqrt(sum(float(p.double().square().sum()) for p in a)) == pytest.approx(1.0)
    assert not torch.equal(a[0], random_direction(targets, 2)[0])


def test_unperturbed_point_is_nll_fp_and_weights_come_back(setup):
    model, _, windows, targets = setup
    before = [t.param.data.clone() for t in targets]
    fp = evaluate_nll(model, windows).nll
    land = Landscape(model, targets, windows)
    points = land.profile({"random-0": random_direction(targets, 0)}, (math.inf, 120.0, 20.0, 0.0))
    assert points[0].nll == fp
    assert points[1].nll == pytest.approx(fp, abs=1e-5)
    assert points[3].nll > points[2].nll > fp - 1e-3  # 0 dB of noise destroys the model
    assert all(torch.equal(t.param.data, b) for t, b in zip(targets, before))


def test_rtn_direction_reaches_the_rtn_model_at_its_sqnr(setup):
    model, _, windows, targets = setup
    fmt = parse_format("mxint3_32")
    moved = [quantize_weight(t.as_out_in(), fmt) for t in targets]
    direction = difference_direction(targets, moved)
    with rtn_quantized(model, fmt, targets) as report:
        nll_rtn = evaluate_nll(model, windows).nll
    land = Landscape(model, targets, windows)
    assert land.nll_at(direction, report.sqnr_db) == pytest.approx(nll_rtn, abs=1e-4)
    assert land.norm == pytest.approx(weight_norm(targets))


def test_slope_is_positive_on_a_trained_model(setup):
    model, _, windows, targets = setup
    land = Landscape(model, targets, windows)
    assert land.slope(10.0, seeds=(0, 1)) > 0


def test_feature_record_has_the_predictors_inputs_and_gptq_target(setup, docs_text):
    model, tok, windows, targets = setup
    cal = calibration_windows(tok, docs_text[:200000], 64, n=8, seed=0)
    before = [t.param.data.clone() for t in targets]
    settings = FeatureSettings(slope_seeds=(0,), damp=0.01)
    record = measure_variant(model, parse_format("mxint3_32"), windows, windows,
                             calibration=cal, settings=settings)
    for key in ("quantized_params", "nll_fp", "sqnr_rtn_db", "nll_rtn", "slope_rtn", "precision",
                "exp_bits", "block_size", "family", "sqnr_gptq_db", "nll_gptq", "bpb_gptq"):
        assert key in record, key
    assert record["precision"] == 3 and record["block_size"] == 32 and record["exp_bits"] == 0
    assert record["nll_rtn"] > record["nll_fp"]
    assert record["sqnr_gptq_db"] < record["sqnr_rtn_db"]  # GPTQ trades SQNR for output error
    assert all(torch.equal(t.param.data, b) for t, b in zip(targets, before))


def test_a_seeded_direction_is_drawn_again_on_each_pass_not_stored(setup):
    """The direction holds no weights-sized tensor: each pass redraws the seed's normalised draw."""
    _, _, _, targets = setup
    direction = random_direction(targets, 3)
    gen = torch.Generator().manual_seed(3)
    draws = [torch.randn(t.param.shape, generator=gen) for t in targets]
    norm = math.sqrt(sum(float(p.double().square().sum()) for p in draws))
    assert all(torch.equal(a, d / norm) for a, d in zip(direction, draws))
    assert all(torch.equal(a, b) for a, b in zip(direction, direction))  # a second pass, same numbers
    assert not [v for v in vars(direction).values() if isinstance(v, torch.Tensor)]
