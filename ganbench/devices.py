"""Which device a run trains on: decided once, by whoever launches the run."""

from __future__ import annotations

import torch

from ganbench.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU if there is one, else the CPU; check explicit choices."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is visible here; use --device cpu.")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise UserError(f"--device {name}: ganbench trains on cpu or cuda devices.")
    return device


def device_description(device: torch.device) -> str:
    """A human-readable name of the hardware (GPU model, or CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"
