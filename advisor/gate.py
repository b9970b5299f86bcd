"""`advisor gate MODEL_VERSION`: a release check that fails closed.

Exit 0 pass, 1 fail, 2 error — bad input, an unreachable store, a missing version, alias or
metric, a NaN. Each threshold is judged with MLflow's own `MetricThreshold` semantics
(`mlflow.validate_evaluation_results`), one check at a time so the report can list them all.
Every check runs and the report is logged (a run in `ptq-gates`, and `--report FILE`) before
anything on the version changes; only a pass then writes the verdict tags and moves `--promote
ALIAS`. A failing gate, or one that cannot finish, leaves the version's tags and aliases as they
were: its verdict lives in its run.
"""

from __future__ import annotations

import json
import math
import time

import click

from advisor.errors import AdvisorError, friendly_errors
from advisor.json_output import echo_json
from advisor.memory import BudgetError, parse_memory
from advisor.options import open_store, tracking_uri_option, writable_file
from registry.versions import VersionNotFoundError, parse_reference, resolve_version
from store.experiments import experiment_id
from store.short_runs import owner_tags

GATE_EXPERIMENT = "ptq-gates"
LOWER_IS_BETTER = {"nll": True, "delta_nll": True, "bytes": True, "memory": True, "sqnr_db": False}


class GateError(AdvisorError):
    """Something the gate needs is missing or unusable: exit 2, fail closed."""


def version_metrics(version) -> dict:
    """nll, delta_nll, bytes, memory (measured peak), sqnr_db of an exported version, from its tags
    (NaN when absent)."""
    def number(tag):
        try:
            return float(version.tags[tag])
        except (KeyError, ValueError):
            return math.nan
    nll, fp = number("nll_measured"), number("nll_fp")
    return {"nll": nll, "delta_nll": nll - fp, "bytes": number("bytes"), "memory": number("measured_peak_bytes"),
            "sqnr_db": number("sqnr_db"), "nll_predicted": number("nll_predicted")}


def model_folder(version):
    """The exported ONNX folder of a version, downloaded; a GateError if its artifacts are gone."""
    from pathlib import Path

    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}"))
    except (MlflowException, OSError) as err:
        raise GateError(f"{version.name}/{version.version}: its artifacts cannot be read ({str(err).splitlines()[0][:200]}); "
                        "export it again with `advisor export`") from None
    found = sorted(folder.rglob("model.onnx"))
    if not found:
        raise GateError(f"{version.name}/{version.version} holds no model.onnx: it was not made by `advisor export`, "
                        "or its artifacts were deleted")
    return found[0].parent


def check_artifacts_load(version) -> None:
    """Recorded mode judges tags: first make sure the model they describe still exists and loads."""
    import onnxruntime as ort

    path = model_folder(version) / "model.onnx"
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for a broken graph
        raise GateError(f"{version.name}/{version.version}: model.onnx does not load in onnxruntime "
                        f"({str(err).splitlines()[0][:200]}); export it again with `advisor export`") from None


def measure_again(client, version) -> float:
    """NLL (nats/token) of the version's ONNX artifact with onnxruntime, on the validation windows its
    export measured (same text, length and count: so ΔNLL compares like with like)."""

    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    from pipelines.export.export_model import OrtAsTorch, session_options
    from pipelines.measure.nll import evaluate_nll
    from pipelines.sources.corpus import load_corpus
    from pipelines.sources.token_windows import evaluation_windows
    from pipelines.tokenizer_check import refuse_known_bad

    onnx_dir = str(model_folder(version))
    tokenizer = AutoTokenizer.from_pretrained(onnx_dir)
    corpus = load_corpus(version.tags["dataset"])
    model_type = json.loads((model_folder(version) / "config.json").read_text()).get("model_type")
    refuse_known_bad(model_type, tokenizer, corpus.validation, f"{version.name}/{version.version}")
    windows = evaluation_windows(tokenizer, corpus.validation, int(version.tags["seq_len"]),
                                 max_windows=int(version.tags["eval_windows"]))
    model = ORTModelForCausalLM.from_pretrained(onnx_dir, session_options=session_options())
    return evaluate_nll(OrtAsTorch(model), windows).nll


def _check(name, value, rule: str, threshold=None, baseline=None, min_absolute=None, min_relative=None) -> dict:
    """One MetricThreshold judged by `mlflow.validate_evaluation_results`; a report row."""
    from mlflow import validate_evaluation_results
    from mlflow.exceptions import MlflowException
    from mlflow.models import EvaluationResult, MetricThreshold

    compare = min_absolute is not None or min_relative is not None
    passed = math.isfinite(value) and (threshold is None or math.isfinite(threshold))
    if passed:
        bound = MetricThreshold(threshold=threshold, min_absolute_change=min_absolute,
                                min_relative_change=min_relative, greater_is_better=not LOWER_IS_BETTER[name])
        try:
            validate_evaluation_results({name: bound}, EvaluationResult({name: value}, {}),
                                        EvaluationResult({name: baseline}, {}) if compare else None)
        except MlflowException:
            passed = False
    return {"metric": name, "rule": rule, "value": value, "threshold": threshold, "baseline": baseline,
            "min_absolute_change": min_absolute, "min_relative_change": min_relative, "passed": passed}


def run_gate(client, reference: str, limits: dict, require: str, baseline_ref: str | None,
             changes: dict, say) -> dict:
    """All checks on `reference`; a report dict with `passed`. Raises GateError when it cannot judge."""

    try:
        name, ref = parse_reference(reference)
        version = resolve_version(client, name, ref)
        base = resolve_version(client, *parse_reference(baseline_ref)) if baseline_ref else None
    except VersionNotFoundError as err:
        raise GateError(str(err)) from None
    metrics = version_metrics(version)
    measured_how = "recorded at export"
    if require == "measured":
        missing = [t for t in ("dataset", "seq_len", "eval_windows") if t not in version.tags]
        if missing:
            raise GateError(f"{name}/{version.version} lacks the {missing[0]} tag: it was not made by `advisor export`")
        say(f"re-measuring {name}/{version.version} with onnxruntime")
        recorded = dict(metrics)
        metrics["nll"] = measure_again(client, version)
        metrics["delta_nll"] = metrics["nll"] - recorded["nll"] + recorded["delta_nll"]  # = nll − nll_fp
        measured_how = (f"re-measured now with onnxruntime ({version.tags['eval_windows']} validation windows "
                        f"of {version.tags['seq_len']} tokens, as at export)")
    elif require == "recorded":
        check_artifacts_load(version)
    elif require == "predicted":
        if not math.isfinite(metrics["nll_predicted"]):
            raise GateError(f"{name}/{version.version} has no predicted NLL (export it through "
                            "`advisor recommend --export` or use --require measured)")
        metrics["nll"] = metrics["nll_predicted"]
        measured_how = "predicted by the registry"
    checks = []
    wanted = {k: v for k, v in limits.items() if v is not None}
    if not wanted and base is None:
        raise GateError("no threshold given: a gate without checks would pass anything")
    for metric, threshold in wanted.items():
        sign = "≤" if LOWER_IS_BETTER[metric] else "≥"
        checks.append(_check(metric, metrics[metric], f"{sign} {threshold:g}", threshold=threshold))
    if base is not None:
        before = version_metrics(base)["nll"]
        if not math.isfinite(before):
            raise GateError(f"baseline {base.name}/{base.version} has no measured NLL — the gate fails closed")
        rules = {"increase_abs": lambda x: _check("nll", metrics["nll"], f"≤ baseline + {x:g}", before + x, before),
                 "increase_rel": lambda x: _check("nll", metrics["nll"], f"≤ baseline × (1 + {x:g})",
                                                  before * (1 + x), before),
                 "improve_abs": lambda x: _check("nll", metrics["nll"], f"≤ baseline − {x:g} (MLflow min_absolute_change)",
                                                 baseline=before, min_absolute=x),
                 "improve_rel": lambda x: _check("nll", metrics["nll"], f"≤ baseline − {x:g}·|baseline| "
                                                 "(MLflow min_relative_change)", baseline=before, min_relative=x)}
        compared = [rules[k](v) for k, v in changes.items() if v is not None]
        if not compared:
            raise GateError("--baseline needs a comparison: --max-nll-increase[-rel] or --min-nll-improvement[-rel]")
        checks += compared
    bad = [c["metric"] for c in checks if not math.isfinite(c["value"])]
    if bad:
        what = "measured_peak_bytes (export it again with `advisor export`)" if bad[0] == "memory" else bad[0]
        raise GateError(f"{name}/{version.version}: metric {what} is missing or NaN — the gate fails closed")
    return {"version": f"{name}/{version.version}", "baseline": f"{base.name}/{base.version}" if base else None,
            "nll_source": measured_how, "metrics": metrics, "checks": checks,
            "passed": all(c["passed"] for c in checks), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def log_report(client, report: dict) -> str:
    """The report as an artifact of a run in `ptq-gates` (pass or fail: the audit trail); its run id."""
    import mlflow

    gates = experiment_id(client, GATE_EXPERIMENT, "Release-gate verdicts: one run per check of a version.")
    verdict = "pass" if report["passed"] else "fail"
    with mlflow.start_run(experiment_id=gates, run_name=f"gate {report['version']}: {verdict}",
                          tags={"ptq.kind": "gate", "ptq.gate.version": report["version"], **owner_tags()}) as run:
        mlflow.log_dict(report, "gate_report.json")
        mlflow.log_metrics({f"value.{c['metric']}": c["value"] for c in report["checks"]})
    return run.info.run_id


def record_pass(client, report: dict, promote: str | None) -> None:
    """A passing verdict on the version (tags), then the alias moved: the last writes of a gate."""
    name, version = report["version"].rsplit("/", 1)
    for key, value in {"gate.verdict": "pass", "gate.run_id": report["run_id"], "gate.time": report["time"]}.items():
        client.set_model_version_tag(name, version, key, value)
    if promote:
        client.set_registered_model_alias(name, promote, version)  # one call: the alias moves or not


def _threshold(ctx, param, value):
    """A threshold must be a finite number >= 0: NaN or a negative bound is a typo, not a gate."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise AdvisorError(f"--{param.name.replace('_', '-')} must be a finite number >= 0, not {value:g}")
    return value


@click.command()
@click.argument("reference", metavar="MODEL_VERSION")
@click.option("--max-nll", type=float, default=None, callback=_threshold, help="Largest acceptable NLL, nats/token.")
@click.option("--max-delta-nll", type=float, default=None, callback=_threshold, help="Largest NLL increase over the fp base, nats/token.")
@click.option("--max-bytes", default=None, metavar="SIZE", help="Largest model file: 8GB, 6GiB, 512MB …")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Largest peak memory at run time, as measured at export (measured_peak_bytes): 8GB, 512MB …")
@click.option("--min-sqnr", type=float, default=None, callback=_threshold, help="Smallest acceptable SQNR of the weights, dB.")
@click.option("--require", type=click.Choice(["measured", "predicted", "recorded"]), default="recorded",
              show_default=True, help="measured: re-evaluate the ONNX artifact with onnxruntime now; "
              "predicted: judge the registry's prediction; recorded: the export's own measurement.")
@click.option("--baseline", default=None, metavar="MODEL_VERSION", help="Compare NLL with this version.")
@click.option("--max-nll-increase", type=click.FloatRange(0), default=None,
              help="With --baseline: NLL may exceed the baseline's by at most this, nats/token.")
@click.option("--max-nll-increase-rel", type=click.FloatRange(0), default=None,
              help="With --baseline: … by at most this fraction (0.01 = 1 %).")
@click.option("--min-nll-improvement", type=click.FloatRange(0, min_open=True), default=None,
              help="With --baseline: NLL must beat the baseline's by at least this (MLflow min_absolute_change).")
@click.option("--min-nll-improvement-rel", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="With --baseline: … by at least this fraction (MLflow min_relative_change).")
@click.option("--promote", default=None, metavar="ALIAS", help="Move ALIAS (e.g. production) here on pass.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="Write the JSON report.")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report.")
@friendly_errors
def gate(reference, max_nll, max_delta_nll, max_bytes, max_memory, min_sqnr, require, baseline, max_nll_increase,
         max_nll_increase_rel, min_nll_improvement, min_nll_improvement_rel, promote, report_file,
         tracking_uri, as_json):
    """Pass (exit 0) or fail (exit 1) MODEL_VERSION (name/3, name@alias, models:/…); exit 2 on error.

    Every check lists its threshold, value and verdict; a missing version, alias or metric, a NaN
    or an unreachable store is an error, never a pass.
    """

    try:
        bytes_limit = parse_memory(max_bytes).bytes if max_bytes else None
    except BudgetError as err:
        raise AdvisorError(str(err).replace("--memory", "--max-bytes")) from None
    try:
        memory_limit = parse_memory(max_memory).bytes if max_memory else None
    except BudgetError as err:
        raise AdvisorError(str(err).replace("--memory", "--max-memory")) from None
    changes = {"increase_abs": max_nll_increase, "increase_rel": max_nll_increase_rel,
               "improve_abs": min_nll_improvement, "improve_rel": min_nll_improvement_rel}
    if any(v is not None for v in changes.values()) and not baseline:
        raise AdvisorError("--max-nll-increase[-rel] and --min-nll-improvement[-rel] compare with --baseline: give it")
    client = open_store(tracking_uri)
    say = (lambda m: None) if as_json else (lambda m: click.echo(f"  {m}", err=True))
    # An allowed increase is a bound (MetricThreshold.threshold = baseline + x); a required
    # improvement is MLflow's own min_absolute_change / min_relative_change semantics.
    report = run_gate(client, reference, {"nll": max_nll, "delta_nll": max_delta_nll, "bytes": bytes_limit,
                                          "memory": memory_limit, "sqnr_db": min_sqnr}, require, baseline, changes, say)
    report["run_id"] = log_report(client, report)
    report["promoted"] = promote if promote and report["passed"] else None
    if report_file:
        with open(report_file, "w") as f:
            json.dump(report, f, indent=2)
    if report["passed"]:
        record_pass(client, report, promote)
    if as_json:
        echo_json(report)
    else:
        for c in report["checks"]:
            base = "" if c["baseline"] is None else f", baseline {c['baseline']:.6g}"
            click.echo(f"{'PASS' if c['passed'] else 'FAIL'}  {c['metric']} = {c['value']:.6g} ({c['rule']}{base})")
        click.echo(f"{report['version']}: {'PASS' if report['passed'] else 'FAIL'}"
                   + (f"; alias {promote} moved here" if report["promoted"] else ""))
    if not report["passed"]:
        raise SystemExit(1)
