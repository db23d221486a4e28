#!/usr/bin/env bash
# The released model jet-foundation-small (foundation/registry.py), end to end on 2 CPU cores:
#   1. 250k top + 250k QCD jets, seed 1001, 20 shards            (35-55 minutes)
#   2. its tokenizer, tokenizers/release.yaml                     (about 5 minutes)
#   3. pretraining, pretrain/release.yaml on 2 processes           (45-65 minutes)
#   4. continued with the jet-level target, pretrain/release_jet_target.yaml (about 6 minutes)
#   5. the bundle, model card and training curve (both stages) into checkpoints/jet-foundation-small/
# Every step keeps what a previous call finished (shards, checkpoints), so a killed call
# continues where it stopped when run again.  Run from the repository root.
#   launch/release.sh            (or: launch/release.sh --overwrite, to replace a published release)
set -euo pipefail
cd "$(dirname "$0")/.."
launch/generate_data.sh checkpoints/data/release 250000 10 1001
foundation tokenizer train --config tokenizers/release.yaml --resume
launch/torchrun/pretrain.sh 2 pretrain/release.yaml --resume
launch/torchrun/pretrain.sh 2 pretrain/release_jet_target.yaml --resume
foundation release --run checkpoints/release/pretrain-jet-target --name jet-foundation-small "$@"
