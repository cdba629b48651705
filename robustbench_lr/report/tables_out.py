"""The report's tables as files next to the PDF: CSV (numeric), Markdown and LaTeX (display), and all of them in
one JSON file (`<stem>_tables/tables.json`, read back with `read_tables_json`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..utils import atomic_write, write_text_atomic
from . import tables as T


def write_tables(tables: list[T.ReportTable], folder: Path) -> Path:
    """CSV (numeric), Markdown and LaTeX (display) per table, and tables.json with both forms of all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = {}
    for t in tables:
        atomic_write(folder / f"{t.name}.csv", lambda fh, t=t: t.data.to_csv(fh, index=False))
        write_text_atomic(folder / f"{t.name}.md", f"## {t.title}\n\n" + t.display.to_markdown(index=False)
                          + f"\n\n{t.note}\n")
        write_text_atomic(folder / f"{t.name}.tex", t.display.to_latex(index=False, escape=True, caption=t.title,
                                                                       label=f"tab:{t.name}"))
        blob[t.name] = {"title": t.title, "note": t.note, "data": json.loads(t.data.to_json(orient="split")),
                        "display": json.loads(t.display.to_json(orient="split"))}
    write_text_atomic(folder / "tables.json", json.dumps(blob, indent=1))
    return folder / "tables.json"


def read_tables_json(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Inverse of `write_tables`' JSON: name -> {title, note, data: DataFrame, display: DataFrame}."""
    raw = json.loads(Path(path).read_text())
    out = {}
    for name, t in raw.items():
        out[name] = {"title": t["title"], "note": t["note"],
                     "data": pd.read_json(io.StringIO(json.dumps(t["data"])), orient="split"),
                     "display": pd.read_json(io.StringIO(json.dumps(t["display"])), orient="split", dtype=False)}
    return out
