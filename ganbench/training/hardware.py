"""What a run trained on, in words, recorded beside its figures.

A run records :func:`device_description` in its ``status.json`` (``hardware``) and in its
protocol (``training_hardware``, the results.csv column ``protocol.training_hardware``);
metrics that measure speed also pass it to their protocol (``device_name``), and
``ganbench report`` names it beside every table. On a CPU the string says:

* the model name from ``/proc/cpuinfo`` (on cloud VMs often only "Intel(R) Xeon(R) Processor"),
* the *kind*: the instruction-set level that decides the speed and the bfloat16 arithmetic,
  from the CPU's flags (``AVX512-BF16 + AMX``, ``AVX512``, ``AVX2``, ``SVE + BF16``...), or
  from torch where ``/proc/cpuinfo`` cannot be read, with torch's kernel level when it differs
  (``ATEN_CPU_CAPABILITY`` can lower it),
* whether bfloat16 is native (computed in hardware) or emulated through float32,
* torch's thread count: a run's figures depend on it (the order of floating-point sums).

For example ``Intel(R) Xeon(R) Processor, AVX512-BF16 + AMX (bf16 native), 2 torch threads``.
On a GPU it is the GPU's name (``NVIDIA H100 80GB HBM3``).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch

CPUINFO = "/proc/cpuinfo"


@dataclass(frozen=True)
class CpuInfo:
    """The first processor's entry in ``/proc/cpuinfo``."""

    model: str
    """``model name`` (x86); empty where the file has none (ARM)."""
    flags: frozenset[str]
    """``flags`` (x86) or ``Features`` (ARM), lower case."""


def parse_cpuinfo(text: str) -> CpuInfo:
    """The model name and flags of the first processor listed in ``text`` (``/proc/cpuinfo``)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        if not line.strip():
            if model or flags:
                break  # the first processor's block has ended
            continue
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.lower().split())
    return CpuInfo(model, flags)


def isa_kind(flags: frozenset[str]) -> tuple[str, bool] | None:
    """``(kind, bf16 native)`` from a CPU's flags; None when the flags name no known ISA."""
    if "avx512f" in flags:
        bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
        kind = "AVX512-BF16" if "avx512_bf16" in flags else "AVX512"
        return kind + (" + AMX" if "amx_bf16" in flags or "amx_tile" in flags else ""), bf16
    for flag, kind in (("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2")):
        if flag in flags:
            return kind, False
    for flag, kind in (("sve2", "SVE2"), ("sve", "SVE"), ("asimd", "NEON")):  # ARM's Features
        if flag in flags:
            bf16 = "bf16" in flags
            return kind + (" + BF16" if bf16 else ""), bf16
    return None


@dataclass(frozen=True)
class TorchCpu:
    """What torch itself reports about the CPU (works where ``/proc/cpuinfo`` does not)."""

    capability: str
    """``torch.backends.cpu.get_cpu_capability()``: the vector kernels torch dispatches to
    (``AVX512``, ``AVX2``, ``DEFAULT``, ``SVE256``...)."""
    bf16: bool
    """torch finds AVX512-BF16 instructions."""
    amx: bool
    """torch finds AMX tiles."""
    threads: int
    """``torch.get_num_threads()``."""

    @classmethod
    def here(cls) -> "TorchCpu":
        def probe(name: str) -> bool:  # private probes; an absent one means "not known"
            return bool(getattr(torch.cpu, name, lambda: False)())

        return cls(capability=str(torch.backends.cpu.get_cpu_capability()),
                   bf16=probe("_is_avx512_bf16_supported"), amx=probe("_is_amx_tile_supported"),
                   threads=torch.get_num_threads())

    def kind(self) -> tuple[str, bool]:
        """``(kind, bf16 native)`` from torch alone."""
        kind = "baseline ISA" if self.capability == "DEFAULT" else self.capability
        if self.capability == "AVX512" and self.bf16:
            kind = "AVX512-BF16"
        return kind + (" + AMX" if self.amx else ""), self.bf16 or self.amx


def describe_cpu(cpuinfo: str | None, torch_cpu: TorchCpu, machine: str = "") -> str:
    """``MODEL, KIND (bf16 native|not native), N torch threads`` from a ``/proc/cpuinfo`` text.

    ``cpuinfo`` None (no such file) or without flags: the kind comes from ``torch_cpu``.
    ``machine`` names the CPU when the text has no model name (``x86_64``, ``aarch64``).
    """
    info = parse_cpuinfo(cpuinfo) if cpuinfo else CpuInfo("", frozenset())
    found = isa_kind(info.flags)
    kind, bf16 = found if found else torch_cpu.kind()
    notes = [f"bf16 {'native' if bf16 else 'not native'}"]
    base = kind.split("-")[0].split(" ")[0]
    if found and base in ("AVX512", "AVX2") and torch_cpu.capability in ("AVX512", "AVX2", "DEFAULT") \
            and torch_cpu.capability != base:
        notes.append(f"torch kernels {torch_cpu.capability}")
    threads = torch_cpu.threads
    return (f"{info.model or machine or 'CPU'}, {kind} ({'; '.join(notes)}), "
            f"{threads} torch thread{'s' if threads != 1 else ''}")


def device_description(device: torch.device) -> str:
    """The hardware ``device`` is, in one line: the GPU's name, or the CPU's (see the module's docstring)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":  # mps, xpu...: the kind of device and the machine (a bare "mps" names no hardware)
        return f"{device.type} on {platform.machine() or 'an unknown machine'}"
    try:
        with open(CPUINFO) as handle:
            cpuinfo: str | None = handle.read()
    except OSError:
        cpuinfo = None
    return describe_cpu(cpuinfo, TorchCpu.here(), platform.processor() or platform.machine())


def resumed_hardware(before: str | None, here: str, step: int) -> str:
    """What a run trained on after resuming at ``step`` on ``here``, when it had trained on ``before``.

    ``here`` when nothing was recorded before or the hardware is the same; else the history,
    ``BEFORE; from step N: HERE``, since the run's figures (its throughput above all) mix both.
    """
    if not before or before == here or before.endswith(f": {here}"):
        return before or here
    return f"{before}; from step {step}: {here}"
