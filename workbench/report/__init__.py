"""Self-contained HTML reports and plots of measurements, sweeps and compositions."""

from workbench.report.html import render, write_report

__all__ = ["render", "write_report"]
