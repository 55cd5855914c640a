#!/usr/bin/env bash
# Issue 11's checks on a GPU machine with no network, in the order they pay off, each under its own
# time limit, every log under $OUT. Run from a checkout that carries:
#   gpu/wheels/      the wheels of ../shared/gpu/fetch-wheels.sh (transformers 5.24, TRL, ...)
#   gpu/tokenizer/   the converted SmolLM2's tokenizer files (~/.cache/harness/models/SmolLM2-135M-Instruct/*.json, *.txt)
#   gpu/data/xsum/   the offline XSum test set (HARNESS_DATA_DIR)
# Usage: bash benchmarks/gpu_check.sh [bench|pipeline|all]   (bench: benchmarks/gpu.py, at most 8
# minutes on an H100; pipeline: all five methods, 16 examples, revisions 0-2, on a random 1B model)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
part=${1:-all}
SHAPE=${SHAPE:-llama-1b}  # a shape of benchmarks/gpu.py (tiny: the same steps on a CPU, for trying this script)
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site gpu/wheels/*.whl > "$OUT/install.log" 2>&1
export PYTHONPATH=/tmp/site:$PWD HARNESS_DATA_DIR=$PWD/gpu/data
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
if [[ $part == bench || $part == all ]]; then
  start=$SECONDS
  timeout 540 python3 benchmarks/gpu.py --shape "$SHAPE" --tokenizer gpu/tokenizer --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
  echo "gpu.py exit $? after $((SECONDS - start)) s" >> "$OUT/gpu.log"
fi
if [[ $part == pipeline || $part == all ]]; then
  python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from gpu import build_model; from pathlib import Path; build_model('$SHAPE', 'gpu/tokenizer', Path('/tmp/gpu-model'))" > "$OUT/build.log" 2>&1
  start=$SECONDS
  timeout 420 python3 -m harness.cli run --method srpo,dpo,ipo,simpo,rpo --task xsum --model /tmp/gpu-model \
    --judge local-lm --judge-arg model=/tmp/gpu-model --limit 16 --revisions 2 --max-new-tokens 48 --output-dir /tmp/run > "$OUT/pipeline.log" 2>&1
  echo "pipeline exit $? after $((SECONDS - start)) s" >> "$OUT/pipeline.log"
  cp /tmp/run/summary.json /tmp/run/manifest.json "$OUT/" 2>/dev/null
fi
