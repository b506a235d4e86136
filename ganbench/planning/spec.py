"""One run's fully resolved configuration, and the content hash that names it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ganbench.planning import defaults

IDENTITY_FIELDS = ("architecture", "loss", "dataset", "seed", "steps", "batch_size", "split",
                   "params", "versions")
"""What a run's id is derived from: everything that changes what is trained. Evaluation
settings, schedules and paths are left out, so re-scoring or moving a run keeps its id."""


ID_NEUTRAL_PARAMS: dict[str, Any] = {"lr_schedule": "constant", "g_steps": 1, "latent": "normal",
                                     "updates": "alternating", "pac_generator_calls": "one"}
"""Hyperparameters added after runs existed, left out of the run id while they have the value
that trains exactly as before they existed, so those runs keep their ids (and resume)."""


def with_neutral_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every :data:`ID_NEUTRAL_PARAMS` key it lacks at its neutral value: a run
    recorded before such a setting existed trained exactly as one that has it at that value."""
    return {**ID_NEUTRAL_PARAMS, **params}


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to train and evaluate one grid cell."""

    architecture: str
    loss: str
    dataset: str
    seed: int
    steps: int
    """Generator updates; each is preceded by ``params["n_critic"]`` discriminator updates."""
    batch_size: int
    split: str
    params: Mapping[str, Any]
    """Resolved hyperparameters of the architecture, loss and dataset (defaults + user)."""
    versions: Mapping[str, str]
    """``plugin name -> distribution==version`` for every plugin the run uses, and ganbench."""
    metrics: tuple[str, ...] = ()
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    """Resolved settings of the chosen metrics (sample counts, extractor...)."""
    eval_every: int = defaults.EVAL_EVERY
    """Evaluate every N steps as well as at the end (0: only at the end)."""
    checkpoint_every: int = defaults.CHECKPOINT_EVERY
    sample_every: int = defaults.SAMPLE_EVERY
    log_every: int = defaults.LOG_EVERY
    save_samples: bool = False

    @property
    def run_id(self) -> str:
        """A 12-hex-digit content hash of the identity fields."""
        identity = {name: getattr(self, name) for name in IDENTITY_FIELDS}
        identity["params"] = {key: value for key, value in self.params.items()
                              if key not in ID_NEUTRAL_PARAMS or ID_NEUTRAL_PARAMS[key] != value}
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """A short human-readable name: ``dcgan/wgan-gp/mnist/seed0``."""
        return f"{self.architecture}/{self.loss}/{self.dataset}/seed{self.seed}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = list(self.metrics)
        data["run_id"] = self.run_id
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RunSpec":
        fields = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        fields["metrics"] = tuple(fields.get("metrics", ()))
        fields["params"] = with_neutral_params(fields.get("params") or {})  # a run from before a setting existed
        return cls(**fields)
