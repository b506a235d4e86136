"""The ledger: what ganbench keeps on disk.

``storage`` (every write: atomic, no symlinks, disk-full errors), ``runs`` (one directory
per run, ``results.csv``, locks) and ``statuses`` (how a run stands).
"""
