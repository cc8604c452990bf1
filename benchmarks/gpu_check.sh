#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go (written for an H100/H200; any CUDA GPU with bf16 runs it).
#
#   bash benchmarks/gpu_check.sh [output_folder]        # default: gpu_check/
#   PYTHON=.venv/bin/python SKIP_INSTALL=1 bash benchmarks/gpu_check.sh
#
# Assumes a CUDA build of torch is already installed in the active Python (it is never installed here, so pip
# cannot swap it for another build). Steps, each logged to the output folder; a failing step does not stop the
# others, and the script exits non-zero if any failed:
#   1. pip install -e ".[test,bench]" (SKIP_INSTALL=1 skips it, e.g. on a machine without a package index)
#   2. the suite's CUDA-marked tests (pytest -m cuda; they are skipped on machines without a GPU)
#   3. benchmarks/peer_speed.py on the GPU in bfloat16 (Tessera's priors against diffusers aMUSEd and
#      transformers Llama generate(), sampling and training)
#   4. benchmarks/prior_train_mfu.py: a bf16 training step of the `base` prior preset, both kinds, with its
#      model-FLOPs utilisation against the GPU's bf16 dense peak
set -uo pipefail

cd "$(dirname "$0")/.."
out="${1:-gpu_check}"
mkdir -p "$out"
python="${PYTHON:-python}"
failed=()

run() {  # run NAME COMMAND...: log to $out/NAME.txt, remember a failure
    local name="$1"
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt"
    local status="${PIPESTATUS[0]}"
    if [ "$status" -ne 0 ]; then
        echo "== $name FAILED (exit $status)"
        failed+=("$name")
    fi
}

"$python" - <<'EOF' || { echo "no CUDA device visible to torch: nothing to check"; exit 2; }
import torch
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF

if [ "${SKIP_INSTALL:-0}" = 1 ]; then
    echo "== install skipped (SKIP_INSTALL=1): the packages must already be installed"
else
    run install "$python" -m pip install -q -e ".[test,bench]"
fi
run cuda_tests "$python" -m pytest -m cuda -q -rA
run peer_speed "$python" -m benchmarks.peer_speed --device cuda --dtype bfloat16 --batch_size 256 \
    --train_batch_size 256 --repeats 10
run peer_speed_base "$python" -m benchmarks.peer_speed --preset base --device cuda --dtype bfloat16 \
    --batch_size 64 --train_batch_size 64 --repeats 5
run prior_train_mfu "$python" -m benchmarks.prior_train_mfu --preset base --device cuda --dtype bfloat16 \
    --batch_size 64 --steps 20 --warmup 3

if [ "${#failed[@]}" -ne 0 ]; then
    echo "failed: ${failed[*]} (logs in $out/)"
    exit 1
fi
echo "all steps passed; logs in $out/"
