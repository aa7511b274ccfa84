"""SFD-IQA vs QualiCLIP throughput on one CUDA GPU (prepared for the lent GPU machine; run it there).

    python bench/gpu_sfd_iqa.py                 # 1024x768 and 512x384, batch 32, fp32 + bf16, RN50 random weights

The same measurement as ``bench/bench_sfd_iqa_speed.py`` (same front door, interleaved timing), at GPU
sizes. Needs torch with CUDA, open_clip_torch (+ ftfy, wcwidth), pydantic, safetensors, pillow, pyyaml;
no Ray, no pyiqa, no download (random weights: the cost does not depend on their values). On the lent
machine (REFERENCE.md, "Running on the lent GPU machine"): carry the open_clip_torch/ftfy/wcwidth wheels
and prefix the command with their install. Prints the machine line, images/s per model and dtype, the
ratios and the peak GPU memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_sfd_iqa_speed import main as speed  # noqa: E402

RUNS = (
    ["--size", "1024x768", "--images", "64", "--batch", "32", "--dtypes", "fp32", "bf16", "--repeats", "3"],
    ["--size", "512x384", "--images", "128", "--batch", "64", "--dtypes", "fp32", "bf16", "--repeats", "3"],
)

if __name__ == "__main__":
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this script measures the GPU; use bench/bench_sfd_iqa_speed.py on CPU")
    for run in RUNS:
        speed(["--device", "cuda", *run])
