#!/usr/bin/env bash
# A real screenshot of the MLflow UI showing a sweep's runs: a tiny sweep into a fresh sqlite
# store, `mlflow server` on loopback, headless Debian Chromium driven by playwright-core.
# Needs: `apt-get install chromium`, `npm install --prefix bench/.work/ui playwright-core@1`.
# Usage: bash bench/ui_screenshot.sh [OUT.png]   (default bench/mlflow-ui-sweep.png)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-bench/mlflow-ui-sweep.png}")"
work="$(mktemp -d)"
port="${PORT:-5055}"
export MLFLOW_DISABLE_TELEMETRY=true PTQ_ADVISOR_CACHE="${PTQ_ADVISOR_CACHE:-$PWD/.cache/ptq-advisor}"
store="sqlite:///$work/mlflow.db"
bin=.venv/bin
python_docs="$work/python-docs.txt"
$bin/python -c "from pipelines.sources.tiny_model import python_docs_text; open('$python_docs','w').write(python_docs_text())"
model="$($bin/python -c "
from pipelines.sources.corpus import load_corpus; from pipelines.sources.tiny_model import ensure_tiny_model
print(ensure_tiny_model('$PTQ_ADVISOR_CACHE', text=load_corpus('$python_docs').train))")"
$bin/advisor sweep --models "$model" --formats mxint4_32,mxfp4_e2m1_32,int4_g128 \
  --dataset "$python_docs" --tracking-uri "$store" --experiment ui-demo --max-windows 4 \
  --calibration-size 16 --damp 0.01 --landscape-step 8
$bin/mlflow server --backend-store-uri "$store" --default-artifact-root "$work/artifacts" \
  --host 127.0.0.1 --port "$port" > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 1; done
experiment="$($bin/python -c "
from mlflow import MlflowClient; print(MlflowClient('$store').get_experiment_by_name('ui-demo').experiment_id)")"
# The script runs beside its node_modules so that `import "playwright-core"` resolves there.
cp bench/ui_screenshot.mjs bench/.work/ui/
node bench/.work/ui/ui_screenshot.mjs \
  "http://127.0.0.1:$port/#/experiments/$experiment/runs?workflowType=machine_learning" "$out"
