"""The fast path: settings that make small-GAN training faster without changing what is measured.

Each setting is a training-loop hyperparameter (``--set key=value``, defaults in
:data:`ganbench.planning.defaults.FAST_PATH_DEFAULTS`), so it is part of a run's id and of
its ``config.json``:

* ``precision``: ``auto`` trains on images under bfloat16 autocast where the device
  computes bfloat16 natively (CUDA GPUs that support it; CPUs with AVX512-BF16 or AMX) and
  in float32 elsewhere, where bfloat16 is emulated and many times slower. Points always
  train in float32 under ``auto``: the 2D mixtures' mode widths (std 0.01 on ring8's unit
  circle, 0.05 on grid25 out to 4) are about one bfloat16 step at those magnitudes
  (2^-7 near 1, 2^-5 near 4), so bfloat16 outputs would be quantised at the scale the
  mode-coverage metric measures, and the tiny models gain nothing. ``bf16`` forces
  autocast, ``fp32`` turns it off. Weights, optimiser state, losses and penalties stay
  float32: the loop hands losses float32 logits, outside autocast. No GradScaler is needed,
  as bfloat16 has float32's exponent range.
* ``channels_last``: convolutional models and the resident image data in NHWC layout, the
  layout oneDNN and cuDNN convolutions prefer. Models without convolutions are untouched.
* ``fused_optimizers``: Adam's fused kernel (one pass over each parameter instead of about
  six), on CUDA and on CPUs, equal to the per-parameter loop within rounding (an ulp on
  about one value in 100,000 per step); other optimisers' multi-tensor (``foreach``)
  kernels, which give the per-parameter loop's numbers exactly. On the CPU the fused Adam
  makes PacGAN's toy step about 1.1x faster; its mode coverage was checked unchanged
  (docs/performance.md, "The PacGAN toy step").
* ``cudnn_benchmark``: cuDNN times its convolution algorithms for the run's shapes (CUDA only).
* ``tf32``: TF32 matmuls and convolutions while training on CUDA. Off by default, a deliberate
  choice: matmul inputs keep 10 of float32's 23 mantissa bits; left to the user. Evaluation always
  runs in strict float32 (:func:`ganbench.evaluation.fidelity.strict_fp32`), whatever this says.
* ``compile``: ``torch.compile`` the models. Off by default: compiling costs a minute or more
  per run and pays only in long runs. The discriminator is left uncompiled when the loss
  has a penalty, since penalties such as WGAN-GP's differentiate it twice, which compiled
  graphs do not support.

A run whose ``params`` lack a setting (one made before the setting existed) gets it off,
so resuming it trains exactly as before. How the settings resolved on the run's device is
written to the run's protocol (:meth:`FastPath.protocol`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ContextManager, Mapping

from ganbench.planning.defaults import FAST_PATH_OFF, check_precision

if TYPE_CHECKING:  # torch is imported lazily so building grids stays quick
    import torch
    from torch import nn

def native_bfloat16(device: "torch.device") -> bool:
    """True when ``device`` computes bfloat16 in hardware, so autocast to it pays."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":  # private probes; absent ones mean "not known to be native"
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


@dataclass(frozen=True)
class FastPath:
    """The fast-path settings of one run, resolved for the device it trains on."""

    device: "torch.device"
    autocast_dtype: "torch.dtype | None"
    """bfloat16 when the loop runs under autocast, else None (plain float32)."""
    channels_last: bool
    fused_optimizers: bool
    cudnn_benchmark: bool
    tf32: bool
    compile: bool
    compile_discriminator: bool
    """False when ``compile`` is on but the loss's penalty differentiates D twice."""

    def autocast(self) -> ContextManager[None]:
        """A context in which forward passes run in the run's precision."""
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def configure_backends(self) -> None:
        """Set cuDNN autotuning and TF32 for training on a CUDA device (process-wide; no-op on CPUs)."""
        import torch

        if self.device.type != "cuda":
            return
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        precision = "tf32" if self.tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision

    def optimizer_options(self, optimizer: str) -> dict[str, bool]:
        """Keyword arguments selecting the optimiser kernels for ``optimizer`` (``adam``, ``rmsprop``)."""
        if not self.fused_optimizers:
            return {}  # torch's choice
        if optimizer == "adam" and self.device.type in ("cuda", "cpu"):
            return {"fused": True}
        return {"foreach": True}

    def prepare_modules(self, generator: "nn.Module", discriminator: "nn.Module") -> tuple["nn.Module", "nn.Module"]:
        """Return the models in the memory layout (and compiled) as the settings say, on the same parameters."""
        import torch

        if self.channels_last:
            generator, discriminator = (_to_channels_last(model) for model in (generator, discriminator))
        if self.compile:
            # Module.compile keeps the module and its state_dict keys, so checkpoints are unchanged.
            generator.compile()
            if self.compile_discriminator:
                discriminator.compile()
        return generator, discriminator

    def prepare_data(self, samples: "torch.Tensor", discriminator: "nn.Module") -> "torch.Tensor":
        """Return the resident real data in the layout ``discriminator`` reads (indexed batches keep it)."""
        import torch

        if self.channels_last and samples.dim() == 4 and _convolutional(discriminator):
            return samples.contiguous(memory_format=torch.channels_last)
        return samples

    def protocol(self, optimizer: str) -> dict[str, str]:
        """How the run was trained (with ``optimizer``), as text for the run's protocol."""
        cuda = self.device.type == "cuda"
        compiled = "off"
        if self.compile:
            compiled = ("generator and discriminator" if self.compile_discriminator
                        else "generator only (the loss's penalty differentiates the discriminator twice)")
        return {
            "training_precision": "bf16 autocast, fp32 weights and losses" if self.autocast_dtype else "fp32",
            "training_tf32": ("on" if self.tf32 else "off") if cuda else "n/a (not CUDA)",
            "training_channels_last": "on" if self.channels_last else "off",
            "training_optimizer_kernels": ", ".join(f"{key}={value}" for key, value
                                                    in self.optimizer_options(optimizer).items()) or "torch default",
            "training_cudnn_benchmark": ("on" if self.cudnn_benchmark else "off") if cuda else "n/a (not CUDA)",
            "training_compile": compiled,
        }


def resolve(params: Mapping[str, Any], device: "torch.device", *, images: bool = True,
            double_backward: bool = False) -> FastPath:
    """The fast path of a run with hyperparameters ``params`` on ``device``.

    ``images``: the run trains on images, not points (``auto`` precision keeps points in
    float32). ``double_backward``: the loss differentiates the discriminator twice (it has
    a penalty), so the discriminator must not be compiled.
    """
    import torch

    check_precision(params)
    settings = {key: params.get(key, value) for key, value in FAST_PATH_OFF.items()}
    precision = settings["precision"]
    bfloat16 = precision == "bf16" or (precision == "auto" and images and native_bfloat16(device))
    return FastPath(device=device, autocast_dtype=torch.bfloat16 if bfloat16 else None,
                    channels_last=bool(settings["channels_last"]), fused_optimizers=bool(settings["fused_optimizers"]),
                    cudnn_benchmark=bool(settings["cudnn_benchmark"]), tf32=bool(settings["tf32"]),
                    compile=bool(settings["compile"]),
                    compile_discriminator=bool(settings["compile"]) and not double_backward)


def _convolutional(model: "nn.Module") -> bool:
    from torch import nn

    return any(isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) for module in model.modules())


def _to_channels_last(model: "nn.Module") -> "nn.Module":
    import torch

    return model.to(memory_format=torch.channels_last) if _convolutional(model) else model
