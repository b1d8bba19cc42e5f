#!/bin/bash
# The GPU runs, one device command each, prepared on a CPU machine by benchmarks/device_prepare.sh. Run from
# the repository root on the GPU machine; OUT is the folder whose files come back:
#
#     OUT=/path bash benchmarks/device_run.sh run1        # carry [".whl", ".device/run1"], timeout 570 s
#     OUT=/path bash benchmarks/device_run.sh run1-more   # carry [".whl", ".device/run1"], timeout 330 s
#     OUT=/path bash benchmarks/device_run.sh run2        # carry [".whl", ".device/run2"], timeout 600 s
#
# Plans (each step under its own cap, its output in OUT/<step>.txt as it runs, the steps' exit statuses in
# OUT/driver.log; a failed step does not stop the next one):
#   run1       GPU run 1, first command: build mamba_ssm's CUDA scan (for the side-by-side columns), the tests
#              marked gpu, benchmarks/scan.py at its four sizes, benchmarks/model.py --device cuda
#   run1-more  GPU run 1, second command: benchmarks/scan_tune.py at (1, 2048, 16, 2^20) and the variant-scoring
#              throughput (benchmarks/variants.py --model small --device cuda)
#   run2       GPU run 2: the model's gpu tests (on a failure, pretraining falls back to the chunked scan and
#              says so), then pretraining experiment=human_chr20_131k on the human chr20 FASTA for 7.5 minutes,
#              holding out the same last 5 % of chr20 as bundled:human_chr20; brings back summary.json,
#              metrics.csv, training_curves.png and the exported model in fp16 (model_fp16/)
#
# Every plan first writes OUT/versions.txt (nvidia-smi, Python, torch, CUDA, Triton, Lightning). Without a
# CUDA device it stops there, before installing anything, with exit status 3. DEADLINE (seconds, default
# 560; run1-more 320) shortens the caps so that the whole command ends inside the device's time limit.
set -uo pipefail
plan=${1:?usage: OUT=/path bash benchmarks/device_run.sh run1|run1-more|run2}
out=${OUT:?set OUT to the folder the results go to}
case $plan in
    run1|run2) deadline=${DEADLINE:-560} ;;
    run1-more) deadline=${DEADLINE:-320} ;;
    *) echo "unknown plan $plan: run1, run1-more or run2"; exit 2 ;;
esac
[ -f pyproject.toml ] && [ -d benchmarks ] || { echo "run this from the repository root"; exit 2; }
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0

log() { echo "=== $* (at ${SECONDS} s)" | tee -a "$out/driver.log"; }

step() {  # step NAME CAP COMMAND...: at most CAP seconds, and never past the deadline
    local name=$1 cap=$2
    shift 2
    local left=$((deadline - SECONDS - 5))
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -lt 15 ]; then
        log "$name: skipped (no time left before the ${deadline} s deadline)"
        status=1
        return 1
    fi
    log "$name: start (cap $cap s)"
    timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    log "$name: exit $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')"
    [ "$rc" -eq 0 ] || status=1
    return "$rc"
}

log "plan $plan, deadline $deadline s"
{
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    $py -V
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none: no CUDA device visible')
for name in ('triton', 'lightning'):
    try:
        module = __import__(name)
        print(name, module.__version__)
    except ImportError:
        print(name, 'not installed')"
} > "$out/versions.txt" 2>&1
cat "$out/versions.txt"
if ! $py -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    log "no CUDA device visible to $py: nothing to measure here, stopping"
    exit 3
fi

if ls .whl/*.whl > /dev/null 2>&1; then  # what the image lacks (python3 -m pip: plain pip is another Python)
    step install 120 bash -c "$py -m pip install --no-index --no-deps -q .whl/*.whl && \
        $py -m pip install --no-deps --no-build-isolation -q -e ." || { log "install failed: stopping"; exit 1; }
fi

case $plan in
    run1)
        if [ -f .device/run1/build_mamba_ssm.sh ] && step build_mamba_ssm 240 bash .device/run1/build_mamba_ssm.sh; then
            export PYTHONPATH=$PWD/.device/run1/mamba${PYTHONPATH:+:$PYTHONPATH}  # the side-by-side columns
        else
            log "mamba_ssm not built: the tables have no mamba_ssm columns"
        fi
        step tests 180 $py -m pytest -m gpu -q -rs -p no:cacheprovider
        step scan 180 $py benchmarks/scan.py
        step model 150 $py benchmarks/model.py --device cuda
        ;;
    run1-more)
        [ -d .device/run1/mamba ] && export PYTHONPATH=$PWD/.device/run1/mamba${PYTHONPATH:+:$PYTHONPATH}
        step tune 150 $py benchmarks/scan_tune.py --sizes 1,2048,16,1048576
        step variants 150 $py benchmarks/variants.py --model small --device cuda
        ;;
    run2)
        fasta=$PWD/.device/run2/human_chr20_GRCh37.fa.gz
        [ -f "$fasta" ] || { log "$fasta missing: run benchmarks/device_prepare.sh and carry .device/run2"; exit 2; }
        scan=()
        if ! step model_tests 60 $py -m pytest -m gpu -x -q -p no:cacheprovider tests/models; then
            scan=(model.scan_backend=chunked)
            log "the model's gpu tests failed: pretraining with model.scan_backend=chunked instead of the Triton scan"
        fi
        run=${RUN_DIR:-/tmp/genossm-run2}  # checkpoints stay there; what comes back is copied into OUT
        # the held-out span of bundled:human_chr20 (experiment=human_chr20): the last 5 % of chr20, no test split
        step pretrain 480 $py -m genossm.cli pretrain experiment=human_chr20_131k "fasta=$fasta" \
            data.val_fraction=0.05 data.test_fraction=0.0 test_after_fit=false baselines.enabled=false \
            trainer.max_time=00:00:07:30 "output=$run" "${scan[@]}"
        for file in summary.json logs/metrics.csv training_curves.png config.yaml; do
            [ -f "$run/$file" ] && cp "$run/$file" "$out/"
        done
        if [ -d "$run/model" ]; then
            step export_fp16 60 $py -c "import sys, torch
from genossm.models import from_pretrained, load_extra, save_pretrained
model = from_pretrained(sys.argv[1])
save_pretrained(model.to(torch.float16), sys.argv[2], extra=load_extra(sys.argv[1]))
print('fp16 model in', sys.argv[2])" "$run/model" "$out/model_fp16"
        else
            log "no exported model in $run/model"
            status=1
        fi
        ;;
esac
log "done, exit $status"
exit $status
