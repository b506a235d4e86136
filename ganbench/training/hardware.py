"""What a run trained on, in words: recorded with its figures (``device_name``)."""

from __future__ import annotations

import torch


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
