"""The peak memory of an exported model at run time, measured in a fresh process.

`measure_peak(folder, context, batch)` starts `python -m pipelines.export.runtime_peak`, which
imports onnxruntime and numpy only, records its resident set (RSS) before loading, resets the
kernel's high-water mark (`/proc/self/clear_refs`), then does what a generator does at that
context: a bare `onnxruntime.InferenceSession(model.onnx)` with default options, one prefill of
`context − 1` tokens (batch `batch`, empty past), then one decode step on the KV cache it returned,
which fills the cache to `context` tokens (so a model's full context is a valid `context`).
`measured_peak_bytes` is the high-water mark of RSS minus the RSS before loading, so the
interpreter and onnxruntime's shared libraries are not counted. Phases are reported too (session
start, prefill, decode), which is what the runtime memory model's constants were fitted on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


class PeakMeasurementError(RuntimeError):
    """The measuring process failed (its last stderr line says why)."""


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux ≥ 4.0)


def _feeds(session, config: dict, context: int, batch: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, int(config["vocab_size"]), size=(batch, context), dtype=np.int64)
    feeds = {}
    for spec in session.get_inputs():
        if spec.name == "input_ids":
            feeds[spec.name] = ids
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones((batch, context), dtype=np.int64)
        elif spec.name == "position_ids":
            feeds[spec.name] = np.tile(np.arange(context, dtype=np.int64), (batch, 1))
        elif spec.name.startswith("past_key_values"):
            kv_heads, head_dim = spec.shape[1], spec.shape[3]
            feeds[spec.name] = np.zeros((batch, kv_heads, 0, head_dim), dtype=np.float32)
        else:
            raise ValueError(f"unexpected model input {spec.name!r}")
    return feeds


def _probe(folder: Path, context: int, batch: int) -> dict:
    """Runs inside the fresh process."""
    import gc

    import numpy as np
    import onnxruntime as ort

    config = json.loads((folder / "config.json").read_text())
    gc.collect()
    before = _status("VmRSS")
    _reset_peak()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    phases = {"session_rss": _status("VmRSS") - before, "session_peak": _status("VmHWM") - before}
    prefill = max(1, context - 1)
    feeds = _feeds(session, config, prefill, batch)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feeds)))
    phases["prefill_peak"] = _status("VmHWM") - before
    next_ids = outputs.pop("logits")[:, -1].argmax(-1).reshape(batch, 1)
    past = {f"past_key_values.{name[len('present.'):]}": v for name, v in outputs.items() if name.startswith("present.")}
    step = {"input_ids": next_ids.astype(np.int64), **past}
    if "attention_mask" in feeds:
        step["attention_mask"] = np.ones((batch, prefill + 1), dtype=np.int64)
    if "position_ids" in feeds:
        step["position_ids"] = np.full((batch, 1), prefill, dtype=np.int64)
    del outputs, feeds
    session.run(["logits"], step)
    phases["decode_peak"] = _status("VmHWM") - before
    return {"context": context, "batch": batch, "rss_before_load": before,
            "measured_peak_bytes": phases["decode_peak"], "phases": phases,
            "onnxruntime": ort.__version__}


def measure_peak(folder: str | Path, context: int, batch: int = 1, timeout_s: float = 3600) -> dict:
    """Peak RSS (bytes) of a fresh process that loads `folder`/model.onnx and runs it at `context`."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done = subprocess.run([sys.executable, "-m", "pipelines.export.runtime_peak", str(folder), str(context), str(batch)],
                          capture_output=True, text=True, env=env, timeout=timeout_s)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeakMeasurementError(f"measuring the runtime peak failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    where, tokens, rows = sys.argv[1:4]
    print(json.dumps(_probe(Path(where), int(tokens), int(rows))))
