#!/bin/bash
# Prepare, on this machine, what a GPU machine needs for benchmarks/device_run.sh, which has no network there:
#
#     bash benchmarks/device_prepare.sh SHARED        # SHARED: the folder holding device/ and data/
#
# It writes (all ignored by git):
#   .whl/          the Python 3.12 wheels the GPU image lacks (SHARED/device/wheels.sh, plus submitit and
#                  hydra-submitit-launcher, which genossm depends on)
#   .device/run1/  mamba_ssm's sdist and its build script (GPU run 1 builds its CUDA scan there for the
#                  side-by-side columns)
#   .device/run2/  the human chr20 FASTA with its .fai and .gzi (GPU run 2 pretrains on it)
# and prints the size of what each run carries: a device command carries at most 64 MiB.
#   run 1: carry [".whl", ".device/run1"]        run 2: carry [".whl", ".device/run2"]
set -euo pipefail
shared=${1:?usage: bash benchmarks/device_prepare.sh SHARED (the folder holding device/ and data/)}
[ -f pyproject.toml ] && [ -d benchmarks ] || { echo "run this from the repository root"; exit 2; }
bash "$shared/device/wheels.sh" > /dev/null
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform any \
    -d .whl submitit hydra-submitit-launcher 2>&1 | grep -v 'is ignored' || true
mkdir -p .device/run1 .device/run2
cp "$shared/device/build_mamba_ssm.sh" "$shared/device/mamba_ssm-2.3.2.post1.tar.gz" .device/run1/
for suffix in "" .fai .gzi; do
    cp "$shared/data/genomes/human_chr20_GRCh37.fa.gz$suffix" .device/run2/
done
rm -rf .device/run2/.genossm-cache  # a token cache written here (63 MB for chr20) would not fit; the run makes its own
size() { du -sbc "$@" | tail -1 | cut -f1; }
tracked=$(git ls-files -z | du -bc --files0-from=- | tail -1 | cut -f1)  # the working tree travels too
limit=$((64 << 20))
status=0
for run in run1 run2; do
    bytes=$(( $(size .whl ".device/$run") + tracked ))
    verdict=ok
    [ "$bytes" -lt "$limit" ] || { verdict="OVER the 64 MiB a device command carries"; status=1; }
    printf '%s carries %.1f MiB (the tracked tree + .whl + .device/%s): %s\n' "$run" \
        "$(echo "$bytes / 1048576" | bc -l)" "$run" "$verdict"
done
ls -1 .whl
exit $status
