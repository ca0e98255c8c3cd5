#!/bin/bash
# The device measurements of issue #18, in one run on the GPU host (see README.md beside this file): GPT-2 124M training at
# 16 x 1024 with AdamW in fp32, tf32, bf16 and fp16 with the training state on the device, next to PyTorch eager on the
# same GPU; then generation and the UNet bench on the device. JSON lines go to $OUT (one file per bench).
# Usage (on the GPU host, after unpacking the CUDA build into $APP):  tools/gpu/device-bench.sh [steps]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
APP=${APP:-/tmp/app}; OUT=${OUT:-/tmp/out}; STEPS=${1:-10}
NV=${NV:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia}
PY=${PY:-/opt/torch/.venv/bin/python}
export LD_LIBRARY_PATH=$NV/cu13/lib:$NV/cudnn/lib:/usr/local/cuda/lib64:$APP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mkdir -p "$OUT"
gpt2="--layers 12 --width 768 --heads 12"
run() { local name=$1; shift; echo "== $name: $*" >&2; timeout 900 "$@" > "$OUT/$name.jsonl" 2> "$OUT/$name.err"; echo "   exit $? ($(wc -l < "$OUT/$name.jsonl") lines)" >&2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
run train "$APP/optimum-net" bench train --device cuda $gpt2 --seq 1024 --batch 16 --steps "$STEPS" --warmup 3 --precision fp32,tf32,bf16,fp16 --state-on-device --json
run torch "$PY" "$here/torch_gpt2_train.py" --batch 16 --seq 1024 --steps "$STEPS" --warmup 3 --precision fp32,tf32,bf16,fp16
run generate "$APP/optimum-net" bench generate --device cuda $gpt2 --json
run unet "$APP/optimum-net" bench unet --device cuda --json
