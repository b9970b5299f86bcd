"""The `advisor` command line.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so that
`advisor --help` and `advisor formats` start in well under a second.
"""

from __future__ import annotations

import os
import sys

import click

from advisor.errors import AdvisorError, friendly_errors
from advisor.json_output import echo_json
from pipelines.quantize.formats import GRAMMAR, PRESETS, parse_formats

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@click.group()
@click.version_option(package_name="ptq-advisor")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error (or PTQ_ADVISOR_DEBUG=1).")
def cli(debug):
    """Predict, measure and recommend post-training-quantized LLM formats.

    Formats follow Xu et al. 2024: mxint4_32, mxfp4_e2m1_32, int4_g128, ... (see `advisor formats`).
    """
    if debug:
        os.environ["PTQ_ADVISOR_DEBUG"] = "1"


@cli.command()
@click.argument("specs", nargs=-1)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="List a named preset.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def formats(specs, preset, as_json):
    """Parse format strings (or a preset) and show what they mean.

    \b
    Grammar: mxint{P}_{K} | mxfp{P}_e{E}m{M}_{K} | int{P}_tens | int{P}_chan | int{P}_g{K}
    Examples: advisor formats mxint4_32 mxfp6_e3m2_64
              advisor formats --preset xu-mx36 --json
    """
    items = list(specs) + ([preset] if preset else [])
    if not items:
        raise AdvisorError(f"give format strings or --preset. Grammar: {GRAMMAR}; "
                           f"presets: {', '.join(sorted(PRESETS))}")
    parsed = parse_formats(items)
    if as_json:
        echo_json([f.as_dict() for f in parsed])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("format", "family", "P", "E", "M", "K", "scale", "bits/weight")
    for f in parsed:
        scale = "E8M0 / block" if f.is_mx else f"fp16 / {f.granularity}"
        table.add_row(f.name, f.family, str(f.precision), str(f.exp_bits), str(f.man_bits),
                      str(f.block_size or "-"), scale, f"{f.bits_per_weight:.4g}")
    Console(width=120).print(table)


from advisor.browse_commands import explain, models, pareto  # noqa: E402  (commands defined elsewhere)
from advisor.export_command import export  # noqa: E402
from advisor.fetch_model_command import fetch_model  # noqa: E402
from advisor.gate import gate  # noqa: E402
from advisor.measure_commands import demo, measure  # noqa: E402
from advisor.prior_command import prior  # noqa: E402
from advisor.recommend_command import recommend  # noqa: E402
from advisor.registry_commands import fit_predictor, fit_qid, registry  # noqa: E402
from advisor.seed_command import seed  # noqa: E402
from advisor.sweep_commands import landscape, sweep  # noqa: E402
from advisor.zoo_command import zoo  # noqa: E402

for command in (measure, demo, sweep, landscape, fit_predictor, fit_qid, registry, recommend, seed, models, pareto,
                explain, export, gate, zoo, fetch_model, prior):
    cli.add_command(command)


def main():  # pragma: no cover - console entry point
    sys.exit(cli())
