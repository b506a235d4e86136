"""The ledger: what ganbench keeps on disk.

``storage`` (every write: atomic, no symlinks, disk-full errors), ``runs`` (one directory
per run, ``results.csv``, locks), ``statuses`` (how a run stands) and ``records`` (the
portable ``runs.jsonl`` a report keeps of its runs).
"""
