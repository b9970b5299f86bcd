"""`advisor zoo`: train the micro-suite (Ouyang et al.'s design at micro scale) and log it."""

from __future__ import annotations

import click

from advisor.errors import friendly_errors
from advisor.json_output import echo_json
from advisor.options import device_option, tracking_uri_option
from pipelines.zoo.presets import PRESETS, tokens_label
from store.keys import use_store


def _preset_help() -> str:
    return "; ".join(f"{name}: {p.description}" for name, p in PRESETS.items())


@click.command()
@click.option("--preset", type=click.Choice(list(PRESETS)), default="cpu-small", show_default=True,
              help=_preset_help())
@click.option("--out", type=click.Path(file_okay=False), default="zoo", show_default=True,
              help="Folder for the checkpoints (a sub-folder per preset).")
@click.option("--dataset", default=None,
              help="Training/validation text: a named corpus (shakespeare-milton, python-docs), a file or "
                   "folder [default: the preset's].")
@click.option("--seed", type=int, default=0, show_default=True, help="Initialisation and data order of every size.")
@device_option
@click.option("--experiment", default="ptq-zoo", show_default=True, help="MLflow experiment of the checkpoints.")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Print the checkpoints (N, D, losses, run ids) as JSON.")
@friendly_errors
def zoo(preset, out, dataset, seed, device, experiment, tracking_uri, as_json):
    """Train a suite of Llama-style models from scratch; log every checkpoint as an MLflow run.

    Every size sees the same data in the same order; checkpoints at log-spaced token counts D.
    Re-running resumes from the newest checkpoint and logs only what the store lacks, so a suite
    trained elsewhere (e.g. `--preset gpu` on a CUDA machine) is brought in by running this on
    its folder. Then sweep it: `advisor sweep --models-file OUT/PRESET/models.yaml --formats qid`.
    """
    from pipelines.zoo.suite import ZooConfig, run_zoo


    if tracking_uri:
        use_store(tracking_uri)
    config = ZooConfig(preset=preset, out=out, dataset=dataset, seed=seed, experiment=experiment, device=device)
    result = run_zoo(config, say=(lambda m: None) if as_json else (lambda m: click.echo(f"  {m}", err=True)))
    if as_json:
        echo_json(result)
        return
    click.echo(f"{len(result['checkpoints'])} checkpoints of {result['family']} in experiment {experiment}:")
    click.echo(f"  {'checkpoint':<28} {'N non-emb':>10} {'D tokens':>9} {'train':>7} {'val nats':>8} {'val bpb':>7}")
    for row in result["checkpoints"]:
        click.echo(f"  {row['name']:<28} {row['non_embedding_params']:>10,} {tokens_label(row['train_tokens']):>9} "
                   f"{row['train_loss']:>7.3f} {row['nll_val']:>8.3f} {row['bpb_val']:>7.3f}")
    click.echo(f"next: advisor sweep --models-file {result['models_file']} --formats qid "
               f"--dataset {result['dataset']} --no-catalog")
