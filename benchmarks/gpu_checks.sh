#!/bin/bash
# The GPU checks of genossm in one place: the tests marked `gpu`, then the benchmark tables, each step's
# output kept in OUTDIR/<step>.txt. Run from the repository root on a CUDA machine:
#
#     bash benchmarks/gpu_checks.sh OUTDIR [STEP ...]
#
# Steps (default: all, in this order; each takes minutes on one H100):
#     tests    python -m pytest -m gpu (Triton scan and model at real sizes)
#     kernels  benchmarks/kernel_report.py for the GPU found (registers, spills)
#     scan     benchmarks/scan.py (triton, chunked and, when importable, mamba_ssm side by side)
#     tune     benchmarks/scan_tune.py (the Triton scan's tuning options per size)
#     model    benchmarks/model.py --device cuda (small at 1 kb, 131 kb, 1 Mb; the mamba_ssm peer rows)
#     variants benchmarks/variants.py --model small --device cuda
#
# For the mamba_ssm columns, put a mamba_ssm source tree built in place (its selective_scan_cuda
# extension beside the mamba_ssm folder) on PYTHONPATH.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_checks.sh OUTDIR [STEP ...]}
shift
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests kernels scan tune model variants)
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
arch=$($py -c "import torch; c = torch.cuda.get_device_capability(); print(c[0] * 10 + c[1])" 2>/dev/null) || {
    echo "no CUDA device visible to $py"; exit 1; }
status=0
for step in "${steps[@]}"; do
    echo "=== $step ($(date +%H:%M:%S))"
    case $step in
        tests)    cmd=($py -m pytest -m gpu -q -rs) ;;
        kernels)  cmd=($py benchmarks/kernel_report.py --arch "$arch") ;;
        scan)     cmd=($py benchmarks/scan.py) ;;
        tune)     cmd=($py benchmarks/scan_tune.py) ;;
        model)    cmd=($py benchmarks/model.py --device cuda) ;;
        variants) cmd=($py benchmarks/variants.py --model small --device cuda) ;;
        *) echo "unknown step $step"; status=2; continue ;;
    esac
    start=$SECONDS
    "${cmd[@]}" 2>&1 | tee "$out/$step.txt"
    rc=${PIPESTATUS[0]}
    echo "=== $step: exit $rc after $((SECONDS - start)) s" | tee -a "$out/$step.txt"
    [ "$rc" -ne 0 ] && status=1
done
exit $status
