"""Every default of a run that is not a plugin's, in one place.

A run's hyperparameters are, a later one winning on a shared key: :data:`LOOP_DEFAULTS`,
the loss's ``defaults``, the architecture's, the dataset's, then the user's ``--set``
(docs/plugins.md, "Hyperparameters", lists them all). Schedules and lengths are settings
of the grid, not hyperparameters: they do not change what is trained.
"""

from __future__ import annotations

from typing import Any, Mapping

from ganbench.errors import UserError

OPTIMIZERS = ("adam", "rmsprop")
"""Values of ``optimizer``: ``torch.optim.Adam(lr, betas=(beta1, beta2))`` or ``torch.optim.RMSprop(lr)``."""
LR_SCHEDULES = ("constant", "linear")
"""Values of ``lr_schedule``: ``linear`` lets both learning rates fall linearly to 0 at the last step."""
LATENT_DISTRIBUTIONS = ("normal", "uniform")
"""Values of ``latent``: z ~ N(0, I) or U(-1, 1) per coordinate (:mod:`ganbench.planning.latent`)."""
PAC_GENERATOR_CALLS = ("one", "per_position")
"""Values of ``pac_generator_calls``: the ``batch * pac`` generated samples of a step from one
generator call, or from ``pac`` calls of ``batch`` samples, call i giving the i-th sample of
every pack (so each call is its own BatchNorm batch, as in PacGAN's code)."""
UPDATE_ORDERS = ("alternating", "simultaneous")
"""Values of ``updates``: D's steps then G's (each on fresh samples), or both from one forward
pass, each network's gradients taken at the same parameters (ALI's Blocks algorithm, which
PacGAN's 2D experiments train with)."""
PRECISIONS = ("auto", "fp32", "bf16")
"""Values of ``precision`` (see :mod:`ganbench.training.fastpath`)."""

FAST_PATH_DEFAULTS: Mapping[str, Any] = {"precision": "auto", "channels_last": True, "fused_optimizers": True,
                                         "cudnn_benchmark": True, "tf32": False, "compile": False}
"""The fast path's settings as they default in every grid (:mod:`ganbench.training.fastpath`)."""
FAST_PATH_OFF: Mapping[str, Any] = {"precision": "fp32", "channels_last": False, "fused_optimizers": False,
                                    "cudnn_benchmark": False, "tf32": False, "compile": False}
"""Every fast-path setting off: the plain float32 loop. Also what a run gets for a setting it lacks."""

LOOP_DEFAULTS: Mapping[str, Any] = {
    "optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_critic": 1,
    "pac": 1,  # PacGAN: the discriminator judges packs of this many samples (ganbench.planning.pac)
    "lr_schedule": "constant",
    "g_steps": 1,  # generator optimiser steps per round, each on the round's same noise batch
    "latent": "normal",
    "updates": "alternating",  # or "simultaneous": D and G updated from one forward pass (ALI's algorithm)
    "pac_generator_calls": "one",  # or "per_position": pac generator calls, one per place in a pack
    **FAST_PATH_DEFAULTS,
}
"""Training-loop hyperparameters, used when a loss does not recommend its own."""

DEFAULT_STEPS = 1000
"""Generator steps of a run when neither the grid nor the dataset (``recommended_steps``) says."""
BATCH_SIZE = 64
"""Real samples per discriminator step (packs, with ``pac`` > 1)."""
EVAL_EVERY = 0
"""Evaluate every N generator steps as well as at the end (0: only at the end)."""
CHECKPOINT_EVERY = 500
"""Write ``checkpoint.pt`` every N generator steps (and at the end)."""
SAMPLE_EVERY = 500
"""Draw a sample picture every N generator steps (and at the end)."""
LOG_EVERY = 50
"""Append the losses to ``metrics.jsonl`` every N generator steps."""


def check_precision(params: Mapping[str, Any]) -> None:
    """Raise a UserError naming the fix when ``params`` has a ``precision`` the fast path does not know."""
    precision = params.get("precision", FAST_PATH_OFF["precision"])
    if precision not in PRECISIONS:
        raise UserError(f"--set precision={precision!r}: choose one of {', '.join(PRECISIONS)}.")


def check_loop_params(params: Mapping[str, Any]) -> None:
    """Raise a UserError naming the fix when a loop hyperparameter in ``params`` has a value the loop rejects."""
    check_precision(params)
    if params["optimizer"] not in OPTIMIZERS:
        raise UserError(f"--set optimizer={params['optimizer']!r}: choose one of {', '.join(OPTIMIZERS)}.")
    for key in ("lr_g", "lr_d"):
        if params[key] <= 0:
            raise UserError(f"--set {key}={params[key]}: a learning rate must be positive.")
    if params["n_critic"] < 1:
        raise UserError(f"--set n_critic={params['n_critic']}: must be at least 1.")
    if params["lr_schedule"] not in LR_SCHEDULES:
        raise UserError(f"--set lr_schedule={params['lr_schedule']!r}: choose one of {', '.join(LR_SCHEDULES)}.")
    if params["g_steps"] < 1:
        raise UserError(f"--set g_steps={params['g_steps']}: the generator takes at least 1 step per round.")
    if params["latent"] not in LATENT_DISTRIBUTIONS:
        raise UserError(f"--set latent={params['latent']!r}: choose one of {', '.join(LATENT_DISTRIBUTIONS)}.")
    if params["updates"] not in UPDATE_ORDERS:
        raise UserError(f"--set updates={params['updates']!r}: choose one of {', '.join(UPDATE_ORDERS)}.")
    if params["updates"] == "simultaneous" and (params["n_critic"] != 1 or params["g_steps"] != 1):
        raise UserError(f"--set updates=simultaneous takes one D and one G update from one forward pass: it needs "
                        f"n_critic=1 and g_steps=1 (got {params['n_critic']} and {params['g_steps']}).")
    if params["pac_generator_calls"] not in PAC_GENERATOR_CALLS:
        raise UserError(f"--set pac_generator_calls={params['pac_generator_calls']!r}: choose one of "
                        f"{', '.join(PAC_GENERATOR_CALLS)}.")
    if params["pac"] < 1:
        raise UserError(f"--set pac={params['pac']}: the discriminator judges packs of at least 1 sample; "
                        "use pac=1 (no packing) or more.")
