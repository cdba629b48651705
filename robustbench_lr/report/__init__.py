"""The PDF report and its tables (see `pdf.build_report`)."""

from .pdf import build_report, load_runs, read_tables_json

__all__ = ["build_report", "load_runs", "read_tables_json"]
