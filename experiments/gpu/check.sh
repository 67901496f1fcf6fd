#!/usr/bin/env bash
# The prepared GPU check (docs/hardware.md): paper-size LoRA/QLoRA steps, the demo on the GPU, hardware=ddp.
#   experiments/gpu/check.sh [hydra overrides]        on an air-gapped GPU machine (wheels from experiments/gpu/wheels)
#   experiments/gpu/check.sh --dry [hydra overrides]  every part at tiny size on CPU, with the project's .venv
# Writes one JSON file (override `output=...`; default: the run's folder under logs/gpucheck/) and prints a summary.
# Nothing is downloaded: the few packages the machine lacks are installed from $GROK_GPU_WHEELS (default
# experiments/gpu/wheels, filled beforehand by `make gpu-wheels`) into a venv ($GROK_GPU_VENV, default
# /tmp/grok-gpu-venv) that sees the machine's own site-packages (torch, transformers, peft, lightning, timm).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
dry=0
args=()
for arg in "$@"; do
  if [ "$arg" = --dry ]; then dry=1; else args+=("$arg"); fi
done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
cd "$repo"

if [ "$dry" = 1 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  exec timeout "${GROK_GPU_CHECK_TIMEOUT:-900}" "${GROK_PYTHON:-$repo/.venv/bin/python}" "$here/check.py" \
    experiment=gpucheck_dry "${args[@]}"
fi

python=${PYTHON:-python3}
venv=${GROK_GPU_VENV:-/tmp/grok-gpu-venv}
wheels=${GROK_GPU_WHEELS:-$here/wheels}
if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
  echo "check.sh: no wheels in $wheels: run 'make gpu-wheels' where pip can reach an index, and bring the folder" >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv --without-pip "$venv"
  # the machine's own packages stay visible (a venv made from a venv would not see them): a .pth naming them
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$python" -c 'import site; print("\n".join(site.getsitepackages()))' >"$site/_grok_machine_packages.pth"
fi
# pip comes from the machine's packages; --no-deps: everything else is already there
"$venv/bin/python" -m pip install -q --no-index --no-deps --no-cache-dir "$wheels"/*.whl
exec timeout "${GROK_GPU_CHECK_TIMEOUT:-300}" "$venv/bin/python" "$here/check.py" "${args[@]}"
