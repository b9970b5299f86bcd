"""Radial loss-landscape profiles of one model, logged as an MLflow run (Xu et al. Fig. 1–2).

Random directions show the typical landscape; a format's RTN error direction shows where that
quantizer actually lands (at SNR = its SQNR). The sweep logs the random profile of every model;
`advisor landscape` adds the quantizers' directions and a finer grid for a closer look.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.measure.evaluate_formats import sequence_length
from pipelines.measure.landscape import (
    Landscape,
    difference_direction,
    random_direction,
)
from pipelines.measure.nll import evaluate_nll
from pipelines.quantize.formats import parse_formats
from pipelines.quantize.rtn import find_weights, rtn_quantized
from pipelines.sources.corpus import load_corpus
from pipelines.sources.model_set import short_name
from pipelines.sources.model_source import load_model
from pipelines.sources.token_windows import evaluation_windows
from store.errors import InputError
from store.experiments import experiment_id
from store.keys import use_store
from store.tracking_server import check_tracking_server


@dataclass(frozen=True)
class LandscapeConfig:
    """A landscape study of one model: directions, SNR grid (dB) and evaluation windows."""

    model: str
    dataset: str
    formats: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    step_db: float = 2.0
    max_db: float = 40.0
    seq_len: int | None = None
    max_windows: int | None = 8
    gguf_file: str | None = None
    dtype: str = "float32"
    batch_size: int = 8
    experiment: str = "ptq-landscape"
    device: str = "cpu"  # the landscape evaluates in float32 on any device (differences of nearby losses)


def snr_grid(step_db: float, max_db: float) -> list[float]:
    """0, step, 2·step, … up to `max_db` (dB)."""
    if step_db <= 0 or max_db <= 0:
        raise InputError("the landscape grid needs a positive step and maximum (dB)")
    n = int(round(max_db / step_db))
    return [i * step_db for i in range(n + 1)]


def directions_for(model, targets, seeds, formats) -> tuple[dict, dict]:
    """({name: unit direction}, {format name: SQNR dB}) — seeded random and RTN error directions."""

    directions = {f"random-{seed}": random_direction(targets, seed) for seed in seeds}
    sqnr = {}
    for fmt in formats:
        with rtn_quantized(model, fmt, targets) as report:
            moved = [t.param.data.clone() for t in targets]
        directions[f"rtn {fmt.name}"] = difference_direction(targets, moved)
        sqnr[fmt.name] = report.sqnr_db
    return directions, sqnr


def log_profile(mlflow, points, title: str, marks: dict[str, float] | None = None,
                path: str = "landscape"):
    """Log profile points (direction, snr_db, nll) as CSV, table and plot; `marks` = SQNR lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame([p.__dict__ for p in points])
    mlflow.log_table(frame, f"{path}/profile.json")
    mlflow.log_text(frame.to_csv(index=False), f"{path}/profile.csv")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for direction, rows in frame.groupby("direction", sort=False):
        style = "-" if direction.startswith("random") else "--"
        ax.plot(rows["snr_db"], rows["nll"], style, marker=".", label=direction)
    for i, (name, value) in enumerate((marks or {}).items()):
        ax.axvline(value, color=f"C{i}", alpha=0.3, linewidth=1)
        ax.annotate(name, (value, ax.get_ylim()[1]), rotation=90, va="top", fontsize=7)
    ax.set_xlabel("perturbation SNR (dB)")
    ax.set_ylabel("NLL (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    mlflow.log_figure(fig, f"{path}/profile.png")
    plt.close(fig)
    return frame


def run_landscape(config: LandscapeConfig, tracking_uri: str | None = None, say=print) -> dict:
    """Measure and log one model's radial profiles; returns the run id and the points."""
    import mlflow


    formats = parse_formats(list(config.formats)) if config.formats else []
    grid = snr_grid(config.step_db, config.max_db)
    if tracking_uri:
        use_store(tracking_uri)
    check_tracking_server(mlflow.get_tracking_uri())
    corpus = load_corpus(config.dataset)
    model, tokenizer, source = load_model(config.model, dtype=config.dtype, gguf_file=config.gguf_file,
                                          device=config.device)
    seq_len = sequence_length(model, config.seq_len)
    windows = evaluation_windows(tokenizer, corpus.validation, seq_len, max_windows=config.max_windows)
    name = short_name(source.gguf_file or config.model)
    mlflow.set_experiment(experiment_id=experiment_id(mlflow.MlflowClient(), config.experiment))
    with mlflow.start_run(run_name=f"{name} · landscape", tags={"ptq.kind": "landscape"},
                          description=f"Radial loss landscape of {config.model} on {corpus.spec}: "
                          "NLL along random and RTN-error directions vs perturbation SNR.") as run:
        mlflow.log_params({"model": config.model, "model_fingerprint": source.fingerprint,
                           "dataset": corpus.spec, "dataset_digest": corpus.digest,
                           "seq_len": seq_len, "windows": len(windows.input_ids),
                           "seeds": ",".join(map(str, config.seeds)),
                           "formats": ",".join(f.name for f in formats),
                           "step_db": config.step_db, "max_db": config.max_db, "device": config.device})
        targets = find_weights(model)
        say(f"{name}: fp loss")
        fp = evaluate_nll(model, windows, config.batch_size)
        mlflow.log_metric("nll_fp", fp.nll)
        directions, sqnr = directions_for(model, targets, config.seeds, formats)
        mlflow.log_metrics({f"sqnr_rtn_db.{k}": v for k, v in sqnr.items()})
        land = Landscape(model, targets, windows, config.batch_size)
        points = []
        for direction, vector in directions.items():
            say(f"{name}: profile along {direction} ({len(grid)} points)")
            points += land.profile({direction: vector}, grid)
        log_profile(mlflow, points, f"{name}: radial loss landscape", sqnr)
    return {"run_id": run.info.run_id, "nll_fp": fp.nll, "sqnr_rtn_db": sqnr,
            "points": [p.__dict__ for p in points]}
