#!/usr/bin/env bash
# Every GPU figure of issue 14 in one prepared script (python side: bench/gpu_all.py).
#
#   bash bench/gpu_all.sh prepare        # HERE (a machine with pip): wheels into .whl/, ray's split into
#                                        # .ray1/ and .ray2/ (ray 2.60's wheel is 79 MB; one call carries 64 MiB)
#   bash bench/gpu_all.sh [ARGS]         # ON THE GPU MACHINE: install what the image lacks, then
#                                        # python3 bench/gpu_all.py --out "$OUT" ARGS
#   DRY_RUN=1 bash bench/gpu_all.sh      # anywhere: tiny sizes on CPU, stops where CUDA is needed
#
# The device tool runs it in two calls while the machine stays warm (it keeps /tmp between calls):
#   call 1: carry [".whl", ".ray1"]  command: bash bench/gpu_all.sh --sections metric,ceiling,degradations,train
#   call 2: carry [".ray2"]          command: bash bench/gpu_all.sh --sections job,compile
# Call 1 installs the small wheels and keeps ray's first half in /tmp; call 2 joins and installs ray. If
# the machine went back in between, call 2 reinstalls nothing and records the Ray sections as skipped.
# $OUT is emptied before each call: gpu_all.json of the last call holds every section measured on this
# machine (kept in /tmp/gpu-all/state.json), gpu_all_calls.log the logs of all calls.
# Budget: call 1 about 6 min, call 2 about 5 min at --n 20000 on an H100/H200 class GPU (estimates, not
# measured yet); --n 10000 halves the job sections.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [[ "${1:-}" == "prepare" ]]; then
    set -e  # .whl/, .ray1/ and .ray2/ are in .gitignore: they travel only when `carry` names them
    # versions of this project's environment; --no-deps: each missing dependency is named here
    small="open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 pyiqa==0.1.16 addict==2.4.0 pydantic==2.14.4
           pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
           jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1"
    platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
               --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
    mkdir -p .whl .ray1 .ray2 /tmp/gpu-all-ray
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $platforms -d .whl $small
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $platforms -d /tmp/gpu-all-ray ray==2.60.0
    wheel=$(ls /tmp/gpu-all-ray/ray-2.60.0-*.whl | head -1)
    rm -f .ray1/* .ray2/*
    (cd /tmp/gpu-all-ray && split -b 40M "$wheel" "$(basename "$wheel").part-")
    mv /tmp/gpu-all-ray/*.part-aa .ray1/ && mv /tmp/gpu-all-ray/*.part-ab .ray2/
    du -sh .whl .ray1 .ray2
    exit 0
fi

OUT_DIR="${OUT:-$ROOT/gpu-all-out}"
mkdir -p "$OUT_DIR"
if [[ -n "${DRY_RUN:-}" ]]; then
    echo "dry run: nothing installed; tiny sizes on this machine's CPU"
    exec python3 bench/gpu_all.py --dry-run --out "$OUT_DIR" "$@"
fi

SITE=/tmp/gpu-all-site
mkdir -p "$SITE"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "installing .whl/ failed"; exit 3; }
fi
if compgen -G ".ray1/*.part-aa" > /dev/null; then
    cp .ray1/*.part-aa /tmp/ && echo "ray: first half kept in /tmp for the next call"
fi
if compgen -G ".ray2/*.part-ab" > /dev/null; then
    part=$(ls .ray2/*.part-ab | head -1)
    name=$(basename "$part" .part-ab)
    if [[ -f "/tmp/$name.part-aa" ]]; then
        cat "/tmp/$name.part-aa" "$part" > "/tmp/$name"
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            "/tmp/$name" && echo "ray: installed"
    else
        echo "ray: the first half is not in /tmp (a fresh machine?): the Ray sections will be skipped"
    fi
fi
export PYTHONPATH="$SITE:$ROOT" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
# the JPEG collection and the results of earlier calls stay in /tmp while the machine is warm
python3 bench/gpu_all.py --out "$OUT_DIR" --work /tmp/gpu-all/work --state /tmp/gpu-all/state.json "$@"
[[ -f /tmp/gpu-all/log ]] && cat /tmp/gpu-all/log "$OUT_DIR/gpu_all.log" > "$OUT_DIR/gpu_all_calls.log" 2>/dev/null
cat "$OUT_DIR/gpu_all.log" >> /tmp/gpu-all/log
