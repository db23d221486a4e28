#!/usr/bin/env bash
# Pretraining on one node with torchrun: GPUs if present, else CPU processes over gloo.
#   launch/torchrun/pretrain.sh NPROC RECIPE [more foundation pretrain options]
# pretrain/base.yaml and large.yaml read pre-generated shards: make them first with launch/generate_data.sh.
# e.g. launch/torchrun/pretrain.sh 2 pretrain/small.yaml --resume                      (2 CPU processes)
#      launch/torchrun/pretrain.sh 8 pretrain/large.yaml --deepspeed launch/deepspeed/zero2.json
set -euo pipefail
nproc=${1:?number of processes}
recipe=${2:?recipe}
shift 2
# One thread per process on CPU, so processes do not fight over cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export DS_ACCELERATOR=cpu   # DeepSpeed's CPU accelerator when there is no GPU
fi
exec torchrun --standalone --nproc_per_node "$nproc" -m foundation pretrain --config "$recipe" "$@"
