"""Training: one run (or a pack of runs) from its spec to its final checkpoint.

``loop`` (the training loop, on one screen), ``state`` (what a run keeps between steps:
models, optimisers, streams, clocks; built, resumed, checkpointed), ``data`` (the real data,
in memory), ``checkpoint`` (written atomically, read back safely), ``fastpath`` (precision,
channels-last, fused optimisers, compilation), ``packing`` (several runs as one stacked
model), ``pictures`` (sample pictures) and ``hardware`` (what the run trained on). PacGAN's
packed discriminator is a hyperparameter: :mod:`ganbench.planning.pac`.
"""
