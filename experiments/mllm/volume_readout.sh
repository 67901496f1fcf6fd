#!/usr/bin/env bash
# Read-out R² per ETDRS subfield with the central B-scan vs k evenly spaced B-scans of each eye's OCT volume.
#   experiments/mllm/volume_readout.sh <root> <aligned_oct_encoder.safetensors> [selections...]   (default: central 7 25)
# <root>/syntheye: SynthEye with 25-slice volumes; <root>/instructions: stage one naming them; then per selection a
# grok-train-mllm whose ridge read-out is fitted on the training eyes' frozen per-slice tokens before the language
# model trains (one LM step: the read-out does not depend on it), and readout_quality.py on the test split.
# Prints the table of experiments/mllm/README.md ("OCT volumes: the read-out on more B-scans").
set -euo pipefail
root=$1; encoder=$2; shift 2
[ $# -eq 0 ] && set -- central 7 25
selections=("$@")
bin=.venv/bin
[ -f "$root/syntheye/biomarkers.parquet" ] || "$bin/grok-synth" "output_dir=$root/syntheye" \
  options.oct_volume.enabled=true "options.oct_volume.formats=[tiff]" progress=false
[ -f "$root/instructions/manifest.json" ] || "$bin/grok-generate" "input_table=$root/syntheye/biomarkers.parquet" \
  "output_dir=$root/instructions" image_columns.oct=oct_volume_path progress=false
for slices in "${selections[@]}"; do
  run="$root/s$slices"
  mkdir -p "$run/artifacts/align"
  cp "$encoder" "${encoder%.safetensors}.json" "$run/artifacts/align/"
  start=$(date +%s)
  "$bin/grok-train-mllm" "paths.root_dir=$run" "paths.instructions_dir=$root/instructions" "data.oct_slices=$slices" \
    +trainer.max_steps=1 model.clinical_validation.enabled=false logger=none > "$run/train.log" 2>&1
  echo "$slices: trained and exported in $(( $(date +%s) - start )) s;" \
    "OCT feature cache $(du -sm "$run"/artifacts/mllm/feature_cache/oct-* | cut -f1) MB"
  "$bin/python" experiments/mllm/readout_quality.py --export "$run/artifacts/mllm" --split test > /dev/null
done
"$bin/python" - "$root" "${selections[@]}" <<'PY'
import json, sys
root, selections = sys.argv[1], sys.argv[2:]
keys = ["macula_central_um", *(f"macula_{ring}_{side}_um" for ring in ("inner", "outer")
        for side in ("superior", "inferior", "nasal", "temporal"))]
rows = {s: {r["key"]: r["r2_head"] for r in json.load(open(f"{root}/s{s}/artifacts/mllm/readout_quality.json"))["rows"]}
        for s in selections}
print("| subfield | " + " | ".join("central B-scan" if s == "central" else f"{s} B-scans" for s in selections) + " |")
print("|---" * (len(selections) + 1) + "|")
for key in keys:
    print(f"| {key.removeprefix('macula_').removesuffix('_um')} | " + " | ".join(f"{rows[s][key]:.3f}" for s in selections) + " |")
PY
