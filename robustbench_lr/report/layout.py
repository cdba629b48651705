"""PDF building blocks (reportlab platypus on A4): styles, tables split into aligned column blocks, figures
scaled to the page, the footer, and the atomic write of the document.

Figures are matplotlib Figures rendered at 150 dpi, or PNG files (the model figures of a run directory).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ..utils import current_umask
from . import tables as T


def styles() -> dict[str, Any]:
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    ss = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("t", parent=ss["Title"], fontSize=17, spaceAfter=6),
        "h1": ParagraphStyle("h1", parent=ss["Heading1"], fontSize=13, spaceBefore=8, spaceAfter=4),
        "h2": ParagraphStyle("h2", parent=ss["Heading2"], fontSize=10.5, spaceBefore=6, spaceAfter=3),
        "body": ParagraphStyle("b", parent=ss["BodyText"], fontSize=8.5, leading=11, spaceAfter=3),
        "small": ParagraphStyle("s", parent=ss["BodyText"], fontSize=7, leading=8.6, textColor=colors.HexColor("#444444")),
        "cell": ParagraphStyle("c", parent=ss["BodyText"], fontSize=6.6, leading=7.8),
        "warn": ParagraphStyle("w", parent=ss["BodyText"], fontSize=9, leading=11.5, textColor=colors.HexColor("#8b0000")),
        "code": ParagraphStyle("code", parent=ss["Code"], fontSize=6.8, leading=8.2),
    }


def esc(s: Any) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


STATUS_COLORS = {"PASS": "#1a7f37", "WARN": "#b8860b", "FAIL": "#b00020"}


def column_widths(disp: pd.DataFrame, cols: list[str], width: float, style: Any, keys: int = 1) -> list[float]:
    """Column widths (pt) from the rendered text: each key column gets its widest entry (bold header or cell),
    every value column the widest value column's width (so the columns line up), plus padding. Spare width goes
    to the value columns; if the natural widths do not fit, the key columns keep theirs (up to 40% of the page)
    and the value columns shrink (their text wraps)."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    font, bold, size, pad = style.fontName, "Helvetica-Bold", style.fontSize, 6.5
    natural = [pad + max(stringWidth(str(c), bold, size), *(stringWidth(str(v), font, size) for v in disp[c]))
               for c in cols]
    k = min(keys, len(cols))
    key_w, vals = natural[:k], natural[k:]
    if not vals:
        return [w * width / sum(key_w) for w in key_w]
    value_w = max(vals)
    if sum(key_w) + value_w * len(vals) <= width:
        spare = width - sum(key_w) - value_w * len(vals)
        value_w = min(value_w + spare / len(vals), 1.6 * value_w)
        key_w = [w * (width - value_w * len(vals)) / sum(key_w) for w in key_w]
        return key_w + [value_w] * len(vals)
    scale = min(1.0, 0.4 * width / sum(key_w))
    key_w = [w * scale for w in key_w]
    return key_w + [(width - sum(key_w)) / len(vals)] * len(vals)


def _chunks(t: T.ReportTable, rest: list[str], max_cols: int) -> list[list[str]]:
    chunks = t.groups or [rest[i: i + max_cols] for i in range(0, len(rest), max_cols)] or [[]]
    if t.groups and chunks[0] == ["clean"] and len(chunks) > 1:  # clean accuracy leads the first block
        chunks = [["clean", *chunks[1]], *chunks[2:]]
    return chunks


def _cell_text(v: Any, key: bool) -> str:
    text = esc(v)
    status = str(v).split(" ")[0]
    if not key and status in STATUS_COLORS:  # hygiene: the status column, or every matrix cell
        return f'<font color="{STATUS_COLORS[status]}"><b>{text}</b></font>'
    if str(v).endswith(T.BEST_MARK):
        return f"<b>{text}</b>"
    return text


def _table_style(group_starts: list[int]) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import TableStyle

    cmds = [
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7")),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor("#5a6e8c")),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f7f7f7")]),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 2.5), ("RIGHTPADDING", (0, 0), (-1, -1), 2.5),
    ]
    cmds += [("LINEABOVE", (0, r), (-1, r), 0.5, colors.HexColor("#9aa7bb")) for r in group_starts]
    return TableStyle(cmds)


def table_flowables(t: T.ReportTable, st: dict[str, Any], width: float, max_cols: int = 6) -> list[Any]:
    """The display table as reportlab Tables: all columns in one table when they fit (else blocks of at most
    `max_cols` value columns, the key columns repeated), value columns of one width, row groups (a change of
    the first key column) separated by a rule and the repeated group name left out."""
    from reportlab.platypus import Paragraph, Spacer, Table

    out: list[Any] = [Paragraph(esc(t.title), st["h2"])]
    disp = t.display
    keys = list(disp.columns[: t.keys])
    rest = list(disp.columns[t.keys:])
    if t.keys > 1 and not t.groups and len(rest) <= 8:
        max_cols = max(1, len(rest))  # a long table: every column in one block
    group = disp[keys[0]].astype(str).tolist() if t.keys > 1 else []
    starts = [i + 1 for i in range(1, len(group)) if group[i] != group[i - 1]]
    for chunk in _chunks(t, rest, max_cols):
        cols = [*keys, *chunk]
        data = [[Paragraph(f"<b>{esc(c)}</b>", st["cell"]) for c in cols]]
        for i, (_, row) in enumerate(disp[cols].iterrows()):
            cells = [Paragraph(_cell_text(row[c], c in keys), st["cell"]) for c in cols]
            if group and i > 0 and group[i] == group[i - 1]:
                cells[0] = Paragraph("", st["cell"])  # the group's name once, on its first row
            data.append(cells)
        if "detail" in cols:  # the hygiene table: fixed widths for the short columns, the rest for the detail
            first = min(0.16 * width, 80)
            fixed = {"check": 78, "attack": 50, "status": 34, "value": 38, "threshold": 40, "n": 24}
            rest_w = width - first - sum(fixed.get(c, 0) for c in cols[1:])
            widths = [first] + [fixed.get(c, rest_w) for c in cols[1:]]
        else:
            widths = column_widths(disp, cols, width, st["cell"], t.keys)
        tbl = Table(data, colWidths=widths, repeatRows=1)
        tbl.setStyle(_table_style(starts))
        out += [tbl, Spacer(1, 3)]
    if t.note:
        out.append(Paragraph(esc(t.note), st["small"]))
    out.append(Spacer(1, 6))
    return out


def figure_flowable(fig: Figure | Path, width: float, max_height: float) -> Any:
    """A figure (matplotlib, rendered at 150 dpi, or a PNG file with its dpi) at its own printed size, shrunk
    only to fit `width` x `max_height` (points) and never enlarged, so every figure's fonts print at the sizes
    of the package's style (`viz._draw`)."""
    from reportlab.platypus import Image

    if isinstance(fig, Figure):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150)
        buf.seek(0)
        w_in, h_in = fig.get_size_inches()
        src: Any = buf
    else:
        from PIL import Image as PILImage

        with PILImage.open(fig) as im:
            w_px, h_px = im.size
            dpi = float((im.info.get("dpi") or (130, 130))[0]) or 130.0
        w_in, h_in = w_px / dpi, h_px / dpi
        src = str(fig)
    w_pt, h_pt = 72.0 * w_in, 72.0 * h_in
    scale = min(1.0, width / w_pt, max_height / h_pt)
    return Image(src, width=w_pt * scale, height=h_pt * scale)


def aspect(fig: Figure | Path) -> float:
    """height / width of a figure or an image file."""
    if isinstance(fig, Figure):
        w, h = fig.get_size_inches()
        return float(h / w)
    from PIL import Image as PILImage

    with PILImage.open(fig) as im:
        return im.size[1] / im.size[0]


def footer(canvas: Any, doc: Any) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica", 7)
    canvas.drawRightString(doc.pagesize[0] - doc.rightMargin, 0.8 * 28.35, f"robustbench-lr report, page {doc.page}")
    canvas.restoreState()


def write_pdf(story: list[Any], out_pdf: Path, title: str = "robustbench-lr report") -> None:
    """Build the document into a temporary file next to `out_pdf`, give it the umask's normal mode, rename."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm
    from reportlab.platypus import SimpleDocTemplate

    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_pdf.parent, prefix=f".{out_pdf.name}.", suffix=".tmp")
    os.close(fd)
    try:
        doc = SimpleDocTemplate(tmp, pagesize=A4, leftMargin=1.5 * cm, rightMargin=1.5 * cm, topMargin=1.4 * cm,
                                bottomMargin=1.4 * cm, title=title, author="robustbench-lr")
        doc.build(story, onFirstPage=footer, onLaterPages=footer)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, out_pdf)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
