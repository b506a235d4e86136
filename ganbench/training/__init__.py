"""Training: one run (or a pack of runs) from its spec to its final checkpoint.

``loop`` (the training loop and what a run keeps between steps), ``fastpath`` (precision,
channels-last, fused optimisers, compilation), ``pac`` (PacGAN's packed discriminator),
``packing`` (several runs as one stacked model) and ``pictures`` (sample pictures).
"""
