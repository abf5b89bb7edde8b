#!/bin/sh
# One-shot GPU placement check on a GPU node (no network needed): what the node reports, then
# tests/gpu against the real driver, then a GPU workflow through `rhapsody run`.
# Usage: sh tests/gpu/device_check.sh [WHEEL_DIR]  (rhapsody-core wheel to install, else the source)
set -u
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
echo "== node"; nvidia-smi -L; $PY --version
env | grep -E '^(CUDA|NVIDIA)_VISIBLE_DEVICES=' || echo "no *_VISIBLE_DEVICES set"
$PY -c 'import time,subprocess; t=time.monotonic(); subprocess.run(["nvidia-smi","-L"],capture_output=True); print(f"nvidia-smi -L: {(time.monotonic()-t)*1e3:.0f} ms")'
if [ -n "${1:-}" ]; then
    $PY -m pip install --quiet --no-deps --no-index --find-links "$1" rhapsody-core || exit 1
else
    export PYTHONPATH=$PWD/rhapsody-core/src
fi
echo "== tests/gpu"
$PY -m pytest tests/gpu -v -p no:cacheprovider; rc=$?
echo "== rhapsody run, 3 one-GPU tasks"
cat > "$OUT/gpu.toml" <<'TOML'
[workflow]
backend = "concurrent"
[[tasks]]
uid = "a"
executable = "/bin/sh"
arguments = ["-c", "echo a sees [$CUDA_VISIBLE_DEVICES]; sleep 1"]
gpus = 1
[[tasks]]
uid = "b"
executable = "/bin/sh"
arguments = ["-c", "echo b sees [$CUDA_VISIBLE_DEVICES]; sleep 1"]
gpus = 1
[[tasks]]
uid = "cpu"
executable = "/bin/sh"
arguments = ["-c", "echo cpu sees [$CUDA_VISIBLE_DEVICES]"]
TOML
$PY -m rhapsody run --no-progress "$OUT/gpu.toml" --trace "$OUT/trace.json" || rc=1
$PY -m rhapsody report "$OUT/trace.json" || rc=1
exit $rc
