"""Planning: what runs a command asks for, before anything trains.

``spec`` (one run's resolved configuration and the content hash that names it),
``defaults`` (the training loop's hyperparameters and schedules, in one place), ``pac``
(PacGAN's packed discriminator: the shapes and packs ``--set pac=m`` means), ``grid``
(grids from flags, TOML files and presets, expanded into validated runs), ``search``
(random search over ``--set`` distributions) and ``presets/`` (the named grids).
"""
