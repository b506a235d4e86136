"""Execution: where and how the runs of a grid train.

``runner`` (a grid from start to summary), ``devices`` (which device and how many
workers), ``executors/`` (local worker processes, Ray), ``worker`` (the process that trains
runs and records how they ended) and ``rescore`` (evaluating finished runs again).
"""
