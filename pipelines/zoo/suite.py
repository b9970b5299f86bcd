"""The micro-suite pipeline: train every size of a preset, log each checkpoint as an MLflow run.

Experiment `ptq-zoo`: a parent run per size (its training-loss curve), a child run per checkpoint
with N (total and non-embedding parameters), D (`train_tokens`), the training loss, the validation
NLL (nats/token and bits/byte) and the checkpoint folder as an artifact. The run key hashes the
preset, size, seed and data (the training code's hash is a parameter, for provenance), so
re-running logs only what is missing: a suite trained on
another machine (a GPU) is brought into the store by running the same command on its folder.

The pipeline ends by writing `models.yaml` (family `zoo-<preset>`, train_tokens per checkpoint)
for `advisor sweep --models-file`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.measure.device import resolve_device
from pipelines.measure.nll import evaluate_nll
from pipelines.sources.corpus import load_corpus
from pipelines.sources.tiny_model import train_tokenizer
from pipelines.sources.token_windows import evaluation_windows
from pipelines.zoo.presets import PRESETS, ZooPreset, tokens_label
from pipelines.zoo.training import read_info, train_size
from store.code_version import code_version
from store.experiments import experiment_id as ensure_experiment
from store.keys import KEY_TAG, KIND_TAG, use_store, variant_key
from store.run_claims import Heartbeat, claim_tags, settle

EXPERIMENT = "ptq-zoo"
MODELS_FILE = "models.yaml"


@dataclass(frozen=True)
class ZooConfig:
    """One suite: a preset, where its checkpoints go, its data, seed and tracking experiment."""

    preset: str = "cpu-small"
    out: str = "zoo"
    dataset: str | None = None  # default: the preset's
    seed: int = 0
    experiment: str = EXPERIMENT
    device: str = "auto"

    @property
    def spec(self) -> ZooPreset:
        return PRESETS[self.preset]

    @property
    def folder(self) -> Path:
        return Path(self.out) / self.preset


def family(preset: str) -> str:
    """The model family of a suite's checkpoints (groups them for leave-one-family-out)."""
    return f"zoo-{preset}"


def checkpoint_name(preset: str, size: str, tokens: int) -> str:
    return f"{family(preset)}-{size}-{tokens_label(tokens)}"


def _training_code() -> str:
    """The training code's version (its meaning, not its bytes): a change to it is a different suite."""
    return code_version(str(Path(__file__).with_name("training.py"))).rpartition("+")[2]


def _validation(tokenizer, corpus, preset: ZooPreset):

    windows = evaluation_windows(tokenizer, corpus.validation, preset.seq_len,
                                 max_windows=preset.eval_windows, bos=False)

    def evaluate(model):
        result = evaluate_nll(model, windows, batch_size=16)
        return result.nll, result.bits_per_byte

    return evaluate, windows


def _tokenizer(config: ZooConfig, corpus):
    """The suite's BPE tokenizer, trained once on the train split and kept with the suite."""
    from transformers import PreTrainedTokenizerFast


    folder = config.folder / "tokenizer"
    if (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer = train_tokenizer(corpus.train, config.spec.vocab_size)
    tmp = folder.with_name("tokenizer.partial")
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)
    return tokenizer


def _stream(config: ZooConfig, tokenizer, corpus):
    import numpy as np

    path = config.folder / "train_tokens.npy"
    if path.exists():
        return np.load(path)
    ids = np.asarray(tokenizer(corpus.train, add_special_tokens=False)["input_ids"], dtype=np.int32)
    np.save(path, ids)
    return ids


class ZooLogger:
    """Logs checkpoints of one suite to MLflow, each exactly once (by key)."""

    def __init__(self, config: ZooConfig, corpus, say=print):
        import mlflow
        from mlflow import MlflowClient


        self.mlflow, self.client, self.config, self.corpus, self.say = mlflow, MlflowClient(), config, corpus, say
        self.experiment_id = ensure_experiment(
            self.client, config.experiment, "Micro-suite of Llama-style models trained here: a parent run per "
            "size, a child run per checkpoint (N, D, losses, checkpoint artifact).")
        # the checkpoint folders are the suite; the training code's hash is provenance, not identity
        self.base = {"preset": asdict(config.spec), "seed": config.seed, "dataset_digest": corpus.digest}

    def _parent(self, size) -> str:
        key = variant_key(self.base | {"size": size.name})
        runs = self.client.search_runs([self.experiment_id], f"tags.`{KEY_TAG}` = '{key}'", max_results=1)
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(self.experiment_id, run_name=f"{family(self.config.preset)}-{size.name}",
                                     tags={KEY_TAG: key, KIND_TAG: "zoo-size"})
        spec = self.config.spec
        params = {"preset": spec.name, "size": size.name, "hidden": size.hidden, "layers": size.layers,
                  "heads": size.heads, "intermediate": size.intermediate, "vocab_size": spec.vocab_size,
                  "seq_len": spec.seq_len, "batch": spec.batch, "lr": size.peak_lr(spec), "max_tokens": spec.max_tokens,
                  "seed": self.config.seed, "dataset": self.corpus.spec, "dataset_digest": self.corpus.digest,
                  "training_code": _training_code()}
        for name, value in params.items():
            self.client.log_param(run.info.run_id, name, value)
        return run.info.run_id

    def log(self, folder: Path, size) -> str:
        """The run id of this checkpoint's run, logging it first if it is not in the store."""

        info = read_info(folder)
        key = variant_key(self.base | {"size": size.name, "train_tokens": info["train_tokens"]})
        while True:  # reuse the checkpoint's FINISHED run; wait while another process logs it
            done, live = settle(self.client, self.experiment_id, key)
            if done is not None:
                return done.info.run_id
            if not live:
                break
            time.sleep(2.0)
        parent = self._parent(size)
        name = checkpoint_name(self.config.preset, size.name, info["train_tokens"])
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={KEY_TAG: key, KIND_TAG: "zoo-checkpoint", **claim_tags(),
                                           "mlflow.parentRunId": parent, "ptq.zoo.family": family(self.config.preset)})
        run_id = run.info.run_id
        try:
            with Heartbeat(self.client, run_id):
                for param, value in {"size": size.name, "step": info["step"], "seed": info["seed"],
                                     "device": info["device"], "checkpoint": str(folder.resolve())}.items():
                    self.client.log_param(run_id, param, value)
                metrics = {m: float(info[m]) for m in ("train_tokens", "total_params", "non_embedding_params",
                                                       "train_loss", "nll_val", "bpb_val", "train_seconds")}
                now = int(time.time() * 1000)
                from mlflow.entities import Metric

                self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
                self.client.log_batch(parent, metrics=[Metric(m, float(info[m]), now, int(info["train_tokens"]))
                                                       for m in ("train_loss", "nll_val", "bpb_val")])
                self.client.log_artifacts(run_id, str(folder), "checkpoint")
        except Exception:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        self.say(f"logged {name} (run {run_id[:8]})")
        winner, _ = settle(self.client, self.experiment_id, key)  # a same-instant twin: the earlier stays
        return winner.info.run_id


def write_models_file(config: ZooConfig, rows: list[dict]) -> Path:
    """`models.yaml` for the sweep: one entry per checkpoint with its family and train_tokens."""
    import yaml

    path = config.folder / MODELS_FILE
    entries = [{"id": str(Path(r["folder"]).resolve()), "family": family(config.preset),
                "train_tokens": int(r["train_tokens"]), "name": r["name"]} for r in rows]
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return path


def run_zoo(config: ZooConfig, tracking_uri: str | None = None, say=print) -> dict:
    """Train (or resume) every size of the preset, log every checkpoint; returns a summary dict."""
    import torch


    if tracking_uri:
        use_store(tracking_uri)
    spec = config.spec
    corpus = load_corpus(config.dataset or spec.dataset)
    config.folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    tokenizer = _tokenizer(config, corpus)
    stream = _stream(config, tokenizer, corpus)
    evaluate, windows = _validation(tokenizer, corpus, spec)
    device = resolve_device(config.device)
    logger = ZooLogger(config, corpus, say)
    say(f"zoo {spec.name}: {len(spec.sizes)} sizes × {len(spec.checkpoint_steps())} checkpoints up to "
        f"{tokens_label(spec.max_tokens)} tokens; {stream.size:,} training tokens, "
        f"{windows.predicted_tokens:,} validation tokens; {device}")
    rows = []
    for size in spec.sizes:
        def log(folder, size=size):
            logger.log(folder, size)

        for folder in train_size(size, spec, tokenizer, stream, evaluate, config.folder, config.seed,
                                 device, on_checkpoint=log, say=say):
            info = read_info(folder)
            rows.append({"size": size.name, "folder": str(folder), "run_id": logger.log(folder, size),
                         "name": checkpoint_name(spec.name, size.name, info["train_tokens"])}
                        | {k: info[k] for k in ("train_tokens", "total_params", "non_embedding_params",
                                                "train_loss", "nll_val", "bpb_val")})
    models_file = write_models_file(config, rows)
    (config.folder / "summary.json").write_text(json.dumps(rows, indent=2))
    return {"preset": spec.name, "family": family(spec.name), "experiment": config.experiment,
            "dataset": corpus.spec, "dataset_digest": corpus.digest, "models_file": str(models_file),
            "checkpoints": rows}
