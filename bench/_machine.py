"""One line naming the machine a benchmark ran on (CPU model, cores, ISA extensions, GPU)."""

from __future__ import annotations

import os
import platform


def describe_machine() -> str:
    cpu, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", "unknown CPU", platform.processor()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    text = f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, ISA {'+'.join(isa) or 'n/a'}"
    if hasattr(os, "getloadavg"):
        text += ", load average " + "/".join(f"{v:.1f}" for v in os.getloadavg())
    try:
        import torch

        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
        text += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        pass
    return text
