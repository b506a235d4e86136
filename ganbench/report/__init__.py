"""Comparison reports: aggregation across seeds, significance, terminal tables, files and plots.

:func:`write_report` does it all; ``ganbench report`` and the end of ``ganbench run`` call it.
"""

from ganbench.report.command import report_command, write_report

__all__ = ["report_command", "write_report"]
