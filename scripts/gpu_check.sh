#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU: the `gpu` tests, the surgery/plan tests
# on CUDA's torch, short training and split benchmarks in bf16, then the default reproduction
# (+sweep=qv_vs_others, 9 target sets x 5 seeds, 4 parallel jobs on the GPU) with its wall time.
# REPRO=0 skips the reproduction; REPRO_TIMEOUT (s, default 900) bounds it.
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
if [ "${REPRO:-1}" != 0 ]; then
  start=$SECONDS
  # lora_ablate.app.cli has no __main__ block; this is what the `lora-ablate` entry point runs
  timeout "${REPRO_TIMEOUT:-900}" python3 -c 'from lora_ablate.app.cli import main; main()' +sweep=qv_vs_others hydra/launcher=parallel \
    hydra.launcher.n_jobs=4 'hydra.sweeper.params.seed="0,1,2,3,4"' hydra.sweep.dir="$OUT/repro" \
    > "$OUT/repro.log" 2>&1 || status=1
  records=$(find "$OUT/repro" -name result.json | wc -l)
  bf16=$(grep -l '"precision": "bf16"' $(find "$OUT/repro" -name result.json) 2>/dev/null | wc -l)
  echo "default reproduction on the GPU (45 cells, n_jobs=4): $((SECONDS - start)) s wall, $records records ($bf16 in bf16)" \
    | tee "$OUT/repro-time.txt"
  tail -5 "$OUT/repro.log"
fi
exit $status
