"""Execution: where and how the runs of a grid train.

``runner`` (a grid from start to summary), ``devices`` (which device and how many
workers), ``executors/`` (local worker processes, Ray), ``worker`` (the resident process
that trains each job in a fork of itself), ``recording`` (train a run here and record how
it ended) and ``rescore`` (evaluating finished runs again).
"""
