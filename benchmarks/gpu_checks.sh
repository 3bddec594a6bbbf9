#!/usr/bin/env bash
# The device checks of issue 6 as ONE prepared run (device tool: `run`, timeout ~420 s), results under $OUT:
#   gpu_step.log / profile.txt   ben14k batch 512 bf16: plain eager baseline vs fast path, profiled
#   loader.log                   Arrow -> torch batches with 0/4/8 workers on the GPU host's cores
#   gpu_step_model.log           the whole training forward compiled, embedding batch 4096
# Each part has its own time limit so a slow part cannot take the others' results with it.
set -u
OUT=${OUT:-/tmp/crjepa-gpu-checks}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TORCH_LOGS=recompiles
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
date -u
timeout "${STEP_LIMIT:-300}" python3 benchmarks/gpu_step.py --device cuda --profile "$OUT/profile.txt" 2>&1 | tee "$OUT/gpu_step.log"
date -u
if ls .whl/*.whl >/dev/null 2>&1; then  # datasets is not in the device image: carried as wheels (--carry .whl)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
timeout "${LOADER_LIMIT:-60}" python3 benchmarks/loader.py --pairs 2048 --batch-size 512 --workers 0 4 8 2>&1 | tee "$OUT/loader.log"
date -u
timeout "${MODEL_LIMIT:-130}" python3 benchmarks/gpu_step.py --device cuda --no-baseline --compile model --embed-batch 4096 \
  --steps 15 2>&1 | tee "$OUT/gpu_step_model.log"
date -u
echo "== summary"; grep -h '^{' "$OUT"/gpu_step*.log | cut -c1-1500
