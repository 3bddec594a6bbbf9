#!/usr/bin/env bash
# The GPU training-step and embedding checks as ONE prepared run (device tool: `run`, timeout ~600 s; the parts end in ~8 min), results under $OUT:
#   gpu_step.log / profile.txt   ben14k batch 512 bf16: plain eager baseline vs fast path (compiled blocks), profiled
#   gpu_step_model.log           fast path with the whole training forward compiled (training.compile: model)
#   gpu_step_graphs.log          the same with CUDA graphs (torch.compile mode reduce-overhead)
#   gpu_step_autotune.log        the same with Inductor's GEMM autotuning (epilogue fusion of GELU/bias/residual)
# (2026-11-27, run 2, also tried --sdpa flash / efficient: within 0.3 % of PyTorch's cuDNN pick; BENCHMARKS.md)
#   loader.log (LOADER=1)        Arrow -> torch batches with 0/4/8 workers on the GPU host's cores (needs
#                                datasets: carry it as wheels in .whl/)
# Each part has its own time limit so a slow part cannot take the others' results with it.
set -u
OUT=${OUT:-$(mktemp -d -t crjepa-gpu-checks.XXXX)}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TORCH_LOGS=recompiles
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
step() {  # step NAME LIMIT ARGS...
  local name=$1 limit=$2; shift 2; date -u
  timeout "$limit" python3 benchmarks/gpu_step.py --device cuda "$@" 2>&1 | tee "$OUT/gpu_step$name.log"
}
step "" 200 --profile "$OUT/profile.txt"
step _model 170 --no-baseline --compile model
step _graphs 150 --no-baseline --compile model --compile-mode reduce-overhead
step _autotune 240 --no-baseline --compile model --compile-mode max-autotune-no-cudagraphs
if [ "${LOADER:-0}" = 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$OUT/site" .whl/*.whl && export PYTHONPATH=$PYTHONPATH:$OUT/site
  timeout 60 python3 benchmarks/loader.py --pairs 2048 --batch-size 512 --workers 0 4 8 2>&1 | tee "$OUT/loader.log"
fi
date -u
echo "== summary"
for f in "$OUT"/gpu_step*.log; do echo "$f"; grep -h '^{"device"' "$f" | python3 -c "
import json, sys
for line in sys.stdin:
    d = json.loads(line); d.pop('profile_train', None); d.pop('profile_embed', None)
    print({k: d[k] for k in d if k not in ('torch', 'preset', 'peak_tflops_source', 'peak_memory_kind')})"; done
