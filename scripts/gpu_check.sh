#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU (a few minutes): the `gpu` tests, the
# surgery/plan tests on CUDA's torch, and short training and split benchmarks in bf16.
# Where hydra/omegaconf/wandb are missing (e.g. a lent GPU box), install the wheels in .whl/ first:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-}:$PWD/src:$PWD/tests" PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1
OUT="${OUT:-/tmp/gpu-check}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
status=0
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log" || status=1
python3 -m pytest -q -p no:cacheprovider tests/test_surgery.py tests/test_budget.py 2>&1 | tail -3 | tee -a "$OUT/gpu-tests.log" || status=1
if [ -f benchmarks/bench_train.py ]; then
  timeout 300 python3 benchmarks/bench_train.py --model "${BENCH_MODEL:-tiny_bert}" --steps 30 --device cuda --repeats 2 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" || status=1
  timeout 120 python3 benchmarks/bench_split.py --device cuda --n-layer 4 --steps 20 --json "$OUT/bench-split.json" 2>&1 | tee "$OUT/bench-split.log" || status=1
fi
exit $status
