#!/usr/bin/env bash
# Every GPU figure of issue 14 in one prepared script (python side: bench/gpu_all.py).
#
#   bash bench/gpu_all.sh prepare        # HERE (a machine with pip): wheels into .whl/, a slimmed ray into
#                                        # .ray/ (ray 2.60's wheel is 79 MB; one call carries 64 MiB)
#   bash bench/gpu_all.sh [ARGS]         # ON THE GPU MACHINE: install what the image lacks, then
#                                        # python3 bench/gpu_all.py --out "$OUT" ARGS
#   DRY_RUN=1 bash bench/gpu_all.sh      # anywhere: tiny sizes on CPU, stops where CUDA is needed
#
# Device limits (../.library/device/README.md): 15 min of device time per session in ALL (start-up, idle and
# every call), 10 min per call, the machine goes back after ~30 s idle (the next call may land on a fresh,
# bare machine: nothing in /tmp survives), 64 MiB carried per call. So every call is self-contained: it
# carries the small wheels (.whl/, 13 MB) and a slimmed ray (.ray/ray-slim.tar.xz, 29 MB: ray 2.60's
# wheel less java jars, rllib, serve, llm and the dashboard's web build) and installs them when /tmp lacks
# them; the JSON is rewritten after EVERY section, so a call cut short still brings back what it measured.
#   call 1 (~5 min at --n 10000, an estimate: not measured yet): carry [".whl", ".ray"], timeout_s 540,
#          command: bash bench/gpu_all.sh --sections metric,job,compile_shapes
#   call 2 (~5 min), at once (same machine if still warm, else a fresh one): carry [".whl", ".ray"],
#          command: bash bench/gpu_all.sh --sections ceiling,compile,degradations,train
# Budget: two calls plus one machine start (1-2 min) must fit 15 min: issue call 2 at once so it finds the
# machine warm; if under ~7 min of device time is left for it, pass --n 5000 (or drop train/degradations).
# On a warm machine gpu_all.json also keeps the earlier call's sections (/tmp/gpu-all/state.json); on a fresh one
# each call's JSON holds its own sections: keep both files.
# "sr" (issue 10: bench/gpu_sr.py, bench/gpu_train_sfd.py) is in neither call: give it a call of its own in
# another session, or run it instead of degradations,train.
# Sections run in the order given; without --sections, the most important first (bench/gpu_all.py SECTIONS).
# --n defaults to 10000 JPEGs here (20000 is the issue's size: pass --n 20000 if a call has the time).
# Setting --compile-break-even from call 1: gpu_all.json "compile_shapes" holds, per input shape,
# compile_s, eager and compiled img/s and break_even_images = compile_s / (1/eager - 1/compiled); set
# `iqa score --compile-break-even` to the largest break_even_images of the shapes the jobs see (rounded up),
# or keep compiling off (--no-compile) where "pays": false.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [[ "${1:-}" == "prepare" ]]; then
    set -e  # .whl/ and .ray/ are in .gitignore: they travel only when `carry` names them
    # versions of this project's environment; --no-deps: each missing dependency is named here
    small="open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 pyiqa==0.1.16 addict==2.4.0 pydantic==2.14.4
           pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
           jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1"
    platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
               --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
    mkdir -p .whl .ray /tmp/gpu-all-ray
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $platforms -d .whl $small
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $platforms -d /tmp/gpu-all-ray ray==2.60.0
    wheel=$(ls /tmp/gpu-all-ray/ray-2.60.0-*.whl | head -1)
    # slim ray to fit one call's 64 MiB: what the score/train jobs never import goes (jars: Java workers;
    # rllib, serve, llm; the dashboard's prebuilt web client; cloud autoscaler providers)
    rm -rf /tmp/gpu-all-ray/unpacked && mkdir -p /tmp/gpu-all-ray/unpacked .ray && rm -f .ray/*
    # unzip keeping each file's mode (raylet and gcs_server must stay executable)
    (cd /tmp/gpu-all-ray/unpacked && python3 -c 'import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        path = z.extract(info, ".")
        if info.external_attr >> 16:
            os.chmod(path, (info.external_attr >> 16) & 0o777)' "$wheel" \
        && rm -rf ray/jars ray/rllib ray/serve ray/llm ray/dashboard/client/build ray/autoscaler/gcp ray/autoscaler/aws \
        && tar -cf - ray ray-2.60.0.dist-info | xz -T0 -6 > "$ROOT/.ray/ray-slim.tar.xz")
    du -sh .whl .ray
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
# idempotent: a warm machine (second call) skips what the first installed; a fresh one installs it again
if compgen -G ".whl/*.whl" > /dev/null && [[ ! -f "$SITE/.whl-done" ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        && touch "$SITE/.whl-done" || { echo "installing .whl/ failed"; exit 3; }
fi
if [[ -f .ray/ray-slim.tar.xz && ! -d "$SITE/ray" ]]; then
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .ray/ray-slim.tar.xz "$SITE" \
        && echo "ray: installed (slimmed wheel)" \
        || echo "ray: unpacking .ray/ray-slim.tar.xz failed: the Ray sections will be skipped"
fi
export PYTHONPATH="$SITE:$ROOT" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
# the JPEG collection and the results of earlier calls stay in /tmp while the machine is warm
python3 bench/gpu_all.py --out "$OUT_DIR" --n "${N:-10000}" --work /tmp/gpu-all/work --state /tmp/gpu-all/state.json "$@"
[[ -f /tmp/gpu-all/log ]] && cat /tmp/gpu-all/log "$OUT_DIR/gpu_all.log" > "$OUT_DIR/gpu_all_calls.log" 2>/dev/null
cat "$OUT_DIR/gpu_all.log" >> /tmp/gpu-all/log
