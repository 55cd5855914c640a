#!/usr/bin/env bash
# Fills gpu/ (git-ignored) with what benchmarks/gpu_check.sh needs on a GPU machine with no network;
# run it here, then carry ["gpu"] with the device call:
#   gpu/wheels/      ../shared/gpu/fetch-wheels.sh's wheels for that image's Python 3.12, plus the
#                    requirements it leaves out that the image lacks (benchmarks/missing_requirements.py
#                    found them in a replica of the image: datasets needs xxhash, plotly 7 narwhals,
#                    gguf requests)
#   gpu/tokenizer/   the converted SmolLM2's tokenizer files, the random-weight models' vocabulary
#   gpu/data/xsum/   the offline XSum test set (gpu_check.sh points HARNESS_DATA_DIR at gpu/data)
# Usage: bash benchmarks/gpu_prepare.sh   (PYTHON: the project's Python, default .venv/bin/python;
# FETCH: the workplace's wheel script, default ../shared/gpu/fetch-wheels.sh; WHEEL_PYTHON: the GPU
# image's Python, 3.12, which FETCH also assumes; about 34 MB in all)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
FETCH=${FETCH:-../shared/gpu/fetch-wheels.sh}
WHEEL_PYTHON=${WHEEL_PYTHON:-3.12}
bash "$FETCH" gpu/wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$WHEEL_PYTHON" --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d gpu/wheels \
  xxhash narwhals requests charset_normalizer urllib3
tokenizer=$("$PYTHON" -c "from harness.models import resolve_model; print(resolve_model('smollm2-135m'))")
mkdir -p gpu/tokenizer gpu/data/xsum
cp "$tokenizer"/tokenizer.json "$tokenizer"/tokenizer_config.json "$tokenizer"/chat_template.jinja gpu/tokenizer/
xsum=$("$PYTHON" -c "from harness.task import build_task; print(next(filter(None, (o.locate() for o in build_task('xsum', {}).splits()['test'].offline))))")
cp "$xsum" gpu/data/xsum/test.jsonl
du -sh gpu
