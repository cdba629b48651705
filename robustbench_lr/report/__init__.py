"""The PDF report and its tables (see `pdf.build_report`)."""

from .pdf import build_report
from .tables_out import read_tables_json, write_tables

__all__ = ["build_report", "read_tables_json", "write_tables"]
