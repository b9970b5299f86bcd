"""`advisor export`: a deployable ONNX folder with real low-bit weights, verified, registered."""

from __future__ import annotations

import json

import click

from advisor.errors import AdvisorError, friendly_errors
from advisor.json_output import echo_json
from advisor.options import device_option, open_store, tracking_uri_option
from registry.exports.exported_models import register_export


@click.command("export")
@click.argument("model")
@click.option("--format", "format_name", required=True, help="One format, e.g. mxint4_32 (see `advisor formats`).")
@click.option("--method", type=click.Choice(["rtn", "gptq"]), default="gptq", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Destination folder.")
@click.option("--gguf-file", default=None, help="GGUF file inside MODEL's folder (or give the .gguf path).")
@click.option("--dataset", default=None,
              help="Calibration (train split) and verification (validation split) text "
                   "[default: Salesforce/wikitext:wikitext-2-raw-v1].")
@click.option("--calibration-size", type=click.IntRange(1), default=128, show_default=True,
              help="GPTQ calibration windows.")
@click.option("--hessians", type=click.Choice(["sequential", "fp"]), default="sequential", show_default=True,
              help="GPTQ Hessians block by block from the quantized network (reference GPTQ, what "
                   "`advisor sweep` measures by default) or from the unquantized one (Xu et al. §4.3; "
                   "loses to RTN on real models, see docs/real-model-study.md).")
@click.option("--seq-len", type=click.IntRange(0, 1 << 20), default=0, show_default=True,
              help="Tokens per window; 0 = model context, capped at 2048.")
@click.option("--max-windows", type=click.IntRange(1), default=16, show_default=True,
              help="Validation windows on which onnxruntime's NLL is checked against PyTorch's.")
@click.option("--context", type=click.IntRange(1), default=4096, show_default=True,
              help="Tokens (capped at the model's context) at which the export is run in a fresh process "
                   "to measure its peak memory (measured_peak_bytes, beside estimated_runtime_bytes).")
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
@click.option("--register/--no-register", default=True, show_default=True,
              help="Log the export to MLflow and register it as a version named after the base model.")
@tracking_uri_option
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print quantization.json.")
@friendly_errors
def export(model, format_name, method, out, gguf_file, dataset, calibration_size, hessians, seq_len, max_windows,
           context, force, register, tracking_uri, device, as_json):
    """Quantize MODEL for real and export it to ONNX with low-bit weights (MatMulNBits).

    The folder is verified under onnxruntime's default session against the PyTorch-quantized model
    (logits, NLL within 1e-4 nats/token, 20 greedy tokens, weight bytes) before it is moved into
    place, and loads with optimum's ORTModelForCausalLM.from_pretrained(OUT) or a bare
    onnxruntime.InferenceSession. Its peak memory at --context tokens is measured in a fresh
    process and recorded beside the runtime memory model's estimate.
    """
    from pipelines.export.export_model import (
        ExportConfig,
        ExportError,
        ExportInputError,
        check_destination,
        check_exportable,
        export_quantized,
    )
    from pipelines.quantize.formats import parse_format
    from pipelines.sources.corpus import DEFAULT_DATASET


    fmt = parse_format(format_name)
    from pathlib import Path

    try:
        check_exportable(fmt)
        check_destination(Path(out), force)
    except ExportInputError as err:
        raise AdvisorError(str(err)) from None
    client = open_store(tracking_uri) if register else None
    config = ExportConfig(model=model, format=fmt.name, method=method, out=out, dataset=dataset or DEFAULT_DATASET,
                          gguf_file=gguf_file, calibration_size=calibration_size, hessians=hessians,
                          seq_len=seq_len or None,
                          max_windows=max_windows, force=force, context=context, device=device)
    say = (lambda message: None) if as_json else (lambda message: click.echo(f"  {message}", err=True))
    try:
        record = export_quantized(config, say)
    except ExportInputError as err:
        raise AdvisorError(str(err)) from None
    except ExportError as err:
        raise click.ClickException(str(err)) from None  # exit 1: the export did not verify
    if register:

        version = register_export(record, out, client=client)
        record["registered"] = f"{version.name}/{version.version}"
        Path(out, "quantization.json").write_text(json.dumps(record, indent=2))
    if as_json:
        echo_json(record)
        return
    click.echo(f"{out}: {record['format']} by {record['method']}, {record['onnx_file_bytes']:,} bytes "
               f"(weights as stored: {record['stored_bytes_estimate']:,}), NLL {record['nll_onnx']:.4f} nats/token "
               f"with onnxruntime's default session vs {record['nll_torch']:.4f} in PyTorch; "
               f"peak {record['measured_peak_bytes']:,} bytes at {record['runtime']['context']} tokens "
               f"(estimated {record['estimated_runtime_bytes']:,})"
               + (f"; registered as {record['registered']}" if register else ""))

