#!/usr/bin/env bash
# One grounding ablation row: train the MLLM on a prepared root (stage one and two done), then score its test
# reports with the eye's own images (grounding.source=auto) and with the whole biomarker row as input.
#   experiments/mllm/grounding_run.sh <root> <name> <epochs> [overrides...]
# Selection on val/loss (no clinical validation, for speed); figures: score_predictions.py (diagnosis macro-F1).
set -euo pipefail
root=$1; name=$2; epochs=$3; shift 3
bin=.venv/bin
export="$root/artifacts/mllm_$name"
"$bin/grok-train-mllm" "paths.root_dir=$root" "trainer.max_epochs=$epochs" model.clinical_validation.enabled=false \
  monitor=val/loss monitor_mode=min logger=none "export.dir=$export" "hydra.run.dir=$root/logs/$name" "$@"
"$bin/grok-infer" "paths.root_dir=$root" "model_dir=$export" "output=$root/pred_$name.jsonl" progress=false
"$bin/grok-infer" "paths.root_dir=$root" "model_dir=$export" "output=$root/predrow_$name.jsonl" progress=false \
  grounding.source=input grounding.input_columns=all
for kind in pred predrow; do
  "$bin/python" experiments/mllm/score_predictions.py "$root/${kind}_$name.jsonl" "$root/data/instructions/test.jsonl"
done
