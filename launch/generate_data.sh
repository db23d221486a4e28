#!/usr/bin/env bash
# Pre-generated training data for the multi-GPU recipes (pretrain/base.yaml, pretrain/large.yaml):
# QCD and top jets (Pythia 8 + FastJet) in SHARDS shards per class, each shard its own seeds, so the
# shards can be made in parallel and none is made twice. The training processes then only read them.
#   launch/generate_data.sh OUT JETS_PER_CLASS SHARDS [SEED]           all shards, one after another
#   (SEED, default 1, picks the jets: a set meant to stay disjoint from another takes another seed)
#   sbatch --array=0-19 launch/generate_data.sh checkpoints/data/large 500000 10   one shard per array task
#   (task T < SHARDS makes QCD shard T, task SHARDS + T top shard T)
# e.g. launch/generate_data.sh checkpoints/data/base 100000 10     (pretrain/base.yaml)
#      sbatch --array=0-19 launch/generate_data.sh checkpoints/data/large 500000 10   (pretrain/large.yaml)
# A shard that exists is kept (a requeued task does not redo it); a killed one leaves no file.
#SBATCH --job-name=foundation-data
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=32
#SBATCH --time=12:00:00
#SBATCH --output=checkpoints/slurm-%x-%A_%a.out
set -euo pipefail
out=${1:?usage: launch/generate_data.sh OUT JETS_PER_CLASS SHARDS}
jets=${2:?jets per class}
shards=${3:?shards per class}
seed=${4:-1}
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  tasks=("$SLURM_ARRAY_TASK_ID")
else
  tasks=($(seq 0 $((2 * shards - 1))))
fi
processes=(qcd top)
for task in "${tasks[@]}"; do
  process=${processes[$((task / shards))]}
  shard=$((task % shards))
  file=$(printf "%s/%s-%03d.h5" "$out" "$process" "$shard")
  if [ -e "$file" ]; then
    echo "exists, kept: $file"
    continue
  fi
  foundation data generate --process "$process" --jets "$jets" --seed "$seed" --max-particles 128 \
    --shard "$shard" --num-shards "$shards" --workers "${SLURM_CPUS_PER_TASK:-0}" --out "$file"
done
