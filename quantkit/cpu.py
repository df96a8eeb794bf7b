"""This machine's CPU: its model and the ISA flags that decide which integer kernels onnxruntime uses."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

X86_MACHINES = ("x86_64", "amd64", "i686", "x86")  # platform.machine(), lowered
_X86_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")
CPU_FLAGS_OF_INTEREST = (*_X86_FLAGS, "avx512_bf16", "f16c", "asimd", "asimddp", "i8mm")


def cpu_info() -> dict[str, Any]:
    """CPU model and the ISA flags that decide which integer kernels onnxruntime can use."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text(errors="replace")
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if match:
            model = match.group(1).strip()
        match = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)
        if match:
            flags = set(match.group(1).split())
    return {
        "cpu": model,
        "machine": platform.machine(),
        "flags": sorted(f for f in CPU_FLAGS_OF_INTEREST if f in flags),
        "vnni": bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags),
    }


def int8_saturates() -> bool:
    """True on x86 CPUs without VNNI, where onnxruntime's u8 x s8 kernel can saturate in int16."""
    info = cpu_info()
    return str(info["machine"]).lower() in X86_MACHINES and not info["vnni"]
