#!/usr/bin/env bash
# Issue 11's checks on a GPU machine with no network, in the order they pay off, each under its own
# time limit, every log under $OUT. Run from a checkout that carries gpu/ as benchmarks/gpu_prepare.sh
# fills it (wheels, tokenizer, XSum).
# Usage: bash benchmarks/gpu_check.sh [PARTS]   (PARTS: all, tests, or a comma list of bench, pipeline, profile,
# memory, e.g. bench,pipeline for the rows issue 11's targets are read from; bench: benchmarks/gpu.py;
# pipeline: all five methods, 16 examples, revisions 0-2, on a random 1B model; profile:
# benchmarks/profile_step.py, the kernels of a checkpointed DPO step, harness and TRL, and of generation; memory:
# benchmarks/memory_peak.py, what the harness's and TRL's checkpointed peaks hold; tests: the trainer's, the TRL parity
# and the device tests, whose trainers then run on CUDA, for a second call). The default limits make `all` fit
# one 600 s device call; gpu.py prints and saves each number as it gets it, so a cut-off run keeps
# what it measured, and targets.md sets issue 11's targets beside it (benchmarks/gpu_targets.py).
# Raise BENCH_LIMIT to see whether gpu.py finishes in the issue's 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
ALL="bench pipeline profile memory"  # what `all` runs: every part but tests
parts=" ${1:-all} " && parts=${parts//,/ } && parts=${parts/ all / $ALL }
wants() { [[ $parts == *" $1 "* ]]; }
for p in $parts; do  # a misspelt part would otherwise spend a device call doing nothing
  [[ " $ALL tests " == *" $p "* ]] || { echo "gpu_check.sh: unknown part '$p' (all, tests, ${ALL// /, })" >&2; exit 2; }
done
SHAPE=${SHAPE:-llama-1b}  # a shape of benchmarks/gpu.py (tiny: the same steps on a CPU, for trying this script)
BENCH_LIMIT=${BENCH_LIMIT:-250}  # seconds for benchmarks/gpu.py
BENCH_ARGS=${BENCH_ARGS:-}  # more gpu.py arguments, e.g. "--skip cache,checkpointing" (its rows that a session has measured already)
PIPELINE_LIMIT=${PIPELINE_LIMIT:-130}  # seconds for the five-method run
PIPELINE_ARGS=${PIPELINE_ARGS:-}  # more `harness run` arguments for it, e.g. "--engine-arg cache=static" (the run's generation compiled)
PROFILE_LIMIT=${PROFILE_LIMIT:-90}  # seconds for benchmarks/profile_step.py
MEMORY_LIMIT=${MEMORY_LIMIT:-90}  # seconds for benchmarks/memory_peak.py (last: gpu.py's rows give the peaks; this takes them apart)
TESTS_LIMIT=${TESTS_LIMIT:-400}  # seconds for the tests part
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site gpu/wheels/*.whl > "$OUT/install.log" 2>&1
export PYTHONPATH=/tmp/site:$PWD HARNESS_DATA_DIR=$PWD/gpu/data
export TQDM_DISABLE=1  # progress bars in a log file glue the results onto their lines
python3 benchmarks/missing_requirements.py > "$OUT/requirements.txt" 2>&1  # a gap here explains an ImportError below
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
if wants bench; then
  start=$SECONDS
  timeout "$BENCH_LIMIT" python3 benchmarks/gpu.py --shape "$SHAPE" --tokenizer gpu/tokenizer --out "$OUT/gpu.json" $BENCH_ARGS > "$OUT/gpu.log" 2>&1
  echo "gpu.py exit $? after $((SECONDS - start)) s" >> "$OUT/gpu.log"
  python3 benchmarks/gpu_targets.py "$OUT/gpu.json" > "$OUT/targets.md" 2>&1  # issue 11's verdicts, from as far as gpu.py got
fi
if wants pipeline; then
  python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from gpu import build_model; from pathlib import Path; build_model('$SHAPE', 'gpu/tokenizer', Path('/tmp/gpu-model'))" > "$OUT/build.log" 2>&1
  start=$SECONDS
  timeout "$PIPELINE_LIMIT" python3 -m harness.cli run --method srpo,dpo,ipo,simpo,rpo --task xsum --model /tmp/gpu-model \
    --judge local-lm --judge-arg model=/tmp/gpu-model --limit 16 --revisions 2 --max-new-tokens 48 --output-dir /tmp/run $PIPELINE_ARGS > "$OUT/pipeline.log" 2>&1
  echo "pipeline exit $? after $((SECONDS - start)) s" >> "$OUT/pipeline.log"
  cp /tmp/run/summary.json /tmp/run/manifest.json "$OUT/" 2>/dev/null
fi
if wants profile; then
  start=$SECONDS
  timeout "$PROFILE_LIMIT" python3 benchmarks/profile_step.py --shape "$SHAPE" --tokenizer gpu/tokenizer --runs dpo-checkpointing,trl-checkpointing,generate > "$OUT/profile.log" 2>&1
  echo "profile_step.py exit $? after $((SECONDS - start)) s" >> "$OUT/profile.log"
fi
if wants memory; then
  start=$SECONDS
  timeout "$MEMORY_LIMIT" python3 benchmarks/memory_peak.py --shape "$SHAPE" --tokenizer gpu/tokenizer --runs dpo-checkpointing,trl-checkpointing > "$OUT/memory.log" 2>&1
  echo "memory_peak.py exit $? after $((SECONDS - start)) s" >> "$OUT/memory.log"
fi
if wants tests; then  # the benchmark test needs the converted SmolLM2, which does not travel
  start=$SECONDS
  timeout "$TESTS_LIMIT" python3 -m pytest -q -p no:cacheprovider tests/test_trainer.py tests/test_devices.py tests/test_trl_parity.py -k "not gpu_benchmark" > "$OUT/tests.log" 2>&1
  echo "tests exit $? after $((SECONDS - start)) s" >> "$OUT/tests.log"
  start=$SECONDS  # the engine merging adapters into weights on CUDA and restoring them, one model at a time, one compiled step for every adapter, continuous batching with CUDA graphs
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_generation.py -k "merged or model_by_model or compiled or continuous" >> "$OUT/tests.log" 2>&1
  echo "generation tests exit $? after $((SECONDS - start)) s" >> "$OUT/tests.log"
fi
