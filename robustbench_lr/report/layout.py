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


def column_widths(disp: pd.DataFrame, cols: list[str], width: float, style: Any) -> list[float]:
    """Column widths (pt) from the rendered text: each column gets its widest entry (bold header or cell)
    plus padding. Spare width is shared in proportion; if the natural widths do not fit, the first (key)
    column keeps its width and the others shrink in proportion (their text wraps)."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    font, bold, size, pad = style.fontName, "Helvetica-Bold", style.fontSize, 6.5
    natural = [pad + max(stringWidth(str(c), bold, size), *(stringWidth(str(v), font, size) for v in disp[c]))
               for c in cols]
    total = sum(natural)
    if total <= width:
        return [w * width / total for w in natural]
    first = min(natural[0], 0.4 * width)
    rest = sum(natural[1:]) or 1.0
    return [first] + [w * (width - first) / rest for w in natural[1:]]

def table_flowables(t: T.ReportTable, st: dict[str, Any], width: float, max_cols: int = 6) -> list[Any]:
    """The display table, split into column chunks that fit the page, as reportlab Tables."""
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Spacer, Table, TableStyle

    out: list[Any] = [Paragraph(esc(t.title), st["h2"])]
    disp = t.display
    key, rest = disp.columns[0], list(disp.columns[1:])
    chunks = t.groups or [rest[i: i + max_cols] for i in range(0, len(rest), max_cols)] or [[]]
    if t.groups and chunks[0] == ["clean"] and len(chunks) > 1:  # clean accuracy leads the first block
        chunks = [["clean", *chunks[1]], *chunks[2:]]
    for chunk in chunks:
        cols = [key, *chunk]
        data = [[Paragraph(f"<b>{esc(c)}</b>", st["cell"]) for c in cols]]
        for _, row in disp[cols].iterrows():
            cells = []
            for c in cols:
                v = esc(row[c])
                status = str(row[c]).split(" ")[0]
                if c != key and status in STATUS_COLORS:  # hygiene: the status column, or every matrix cell
                    v = f'<font color="{STATUS_COLORS[status]}"><b>{v}</b></font>'
                elif str(row[c]).endswith(T.BEST_MARK):
                    v = f"<b>{v}</b>"
                cells.append(Paragraph(v, st["cell"]))
            data.append(cells)
        first = min(0.22 * width, 110)
        if "detail" in cols:  # the hygiene table: fixed widths for the short columns, the rest for the detail
            fixed = {"check": 78, "status": 36, "value": 44, "threshold": 44, "n": 24}
            rest_w = width - first - sum(fixed.get(c, 0) for c in cols[1:])
            widths = [first] + [fixed.get(c, rest_w) for c in cols[1:]]
        else:
            widths = column_widths(disp, cols, width, st["cell"])
        tbl = Table(data, colWidths=widths, repeatRows=1)
        tbl.setStyle(TableStyle([
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7")),
            ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor("#5a6e8c")),
            ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f7f7f7")]),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ("LEFTPADDING", (0, 0), (-1, -1), 2.5), ("RIGHTPADDING", (0, 0), (-1, -1), 2.5),
        ]))
        out += [tbl, Spacer(1, 3)]
    if t.note:
        out.append(Paragraph(esc(t.note), st["small"]))
    out.append(Spacer(1, 6))
    return out


def figure_flowable(fig: Figure | Path, width: float, max_height: float) -> Any:
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
        w_in, h_in = w_px, h_px
        src = str(fig)
    scale = min(width / w_in, max_height / h_in)
    return Image(src, width=w_in * scale, height=h_in * scale)


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
