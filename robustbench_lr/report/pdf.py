"""The PDF report: provenance, hygiene, summary tables with intervals, curves, model figures, paired tests.

`build_report(run_dirs, out_pdf)` reads the output directories of `evaluate` / `sweep` / `demo` (results.csv,
paired.csv, hygiene.csv, run.json, and figures/*.png with figures.json captions if present), writes the PDF
atomically, and writes every table next to it as CSV, Markdown and LaTeX (pandas), plus all of them in one
JSON file (`<stem>_tables/tables.json`, read back with `read_tables_json`). Layout: reportlab platypus on A4,
figures rendered by matplotlib at 150 dpi.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ..errors import UserError
from ..utils import atomic_write, write_text_atomic
from . import figures as F
from . import tables as T
from . import text as X

log = logging.getLogger(__name__)


@dataclass
class RunBundle:
    """Everything read from the run directories."""

    results: pd.DataFrame
    paired: pd.DataFrame
    hygiene: pd.DataFrame
    runs: list[dict[str, Any]]
    figures: list[tuple[str, Path, str]] = field(default_factory=list)  # (title, png path, caption)
    dirs: list[Path] = field(default_factory=list)


def _read_csv(p: Path) -> pd.DataFrame:
    if not p.is_file() or p.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(p)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def load_runs(run_dirs: list[str | os.PathLike]) -> RunBundle:
    """Read and concatenate the tables of several run directories (a missing directory is a UserError)."""
    res, par, hyg, runs, figs, dirs = [], [], [], [], [], []
    for d in run_dirs:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise UserError(f"run directory {p} does not exist.")
        if not (p / "results.csv").is_file():
            raise UserError(f"{p} has no results.csv: give directories written by `robustbench-lr evaluate`, "
                            f"`sweep` or `demo`.")
        dirs.append(p)
        res.append(_read_csv(p / "results.csv"))
        par.append(_read_csv(p / "paired.csv"))
        hyg.append(_read_csv(p / "hygiene.csv"))
        if (p / "run.json").is_file():
            runs.append(json.loads((p / "run.json").read_text()))
        manifest = p / "figures" / "figures.json"
        if manifest.is_file():
            for f in json.loads(manifest.read_text()):
                if (p / "figures" / f["file"]).is_file():
                    figs.append((f["title"], p / "figures" / f["file"], f.get("caption", "")))
    cat = lambda xs: pd.concat([x for x in xs if not x.empty], ignore_index=True) if any(not x.empty for x in xs) \
        else pd.DataFrame()  # noqa: E731
    results = cat(res)
    if results.empty:
        raise UserError("the run directories hold no results rows.")
    return RunBundle(results, cat(par), cat(hyg), runs, figs, dirs)


# ------------------------------------------------------------------------------------------------- tables out
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


# ------------------------------------------------------------------------------------------------- PDF
def _styles() -> dict[str, Any]:
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


def _esc(s: Any) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


STATUS_COLORS = {"PASS": "#1a7f37", "WARN": "#b8860b", "FAIL": "#b00020"}


def _column_widths(disp: pd.DataFrame, cols: list[str], width: float, style: Any) -> list[float]:
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

def _table_flowables(t: T.ReportTable, st: dict[str, Any], width: float, max_cols: int = 6) -> list[Any]:
    """The display table, split into column chunks that fit the page, as reportlab Tables."""
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Spacer, Table, TableStyle

    out: list[Any] = [Paragraph(_esc(t.title), st["h2"])]
    disp = t.display
    key, rest = disp.columns[0], list(disp.columns[1:])
    chunks = t.groups or [rest[i: i + max_cols] for i in range(0, len(rest), max_cols)] or [[]]
    if t.groups and chunks[0] == ["clean"] and len(chunks) > 1:  # clean accuracy leads the first block
        chunks = [["clean", *chunks[1]], *chunks[2:]]
    for chunk in chunks:
        cols = [key, *chunk]
        data = [[Paragraph(f"<b>{_esc(c)}</b>", st["cell"]) for c in cols]]
        for _, row in disp[cols].iterrows():
            cells = []
            for c in cols:
                v = _esc(row[c])
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
            widths = _column_widths(disp, cols, width, st["cell"])
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
        out.append(Paragraph(_esc(t.note), st["small"]))
    out.append(Spacer(1, 6))
    return out


def _figure_flowable(fig: Figure | Path, width: float, max_height: float) -> Any:
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


def _aspect(fig: Figure | Path) -> float:
    """height / width of a figure or an image file."""
    if isinstance(fig, Figure):
        w, h = fig.get_size_inches()
        return float(h / w)
    from PIL import Image as PILImage

    with PILImage.open(fig) as im:
        return im.size[1] / im.size[0]


def provenance(bundle: RunBundle) -> list[tuple[str, str]]:
    """(label, value) lines for page 1: commands, versions, device, commits, dataset, split and seeds."""
    from ..checkpoint import git_commit, package_versions

    r = bundle.results
    items: list[tuple[str, str]] = [("generated", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")),
                                    ("report by", f"robustbench-lr {package_versions()['robustbench_lr']}, git {git_commit() or 'n/a'}")]
    for run in bundle.runs:
        items.append(("command", run.get("command", "?")))
        if run.get("versions"):
            v = run["versions"]
            items.append(("versions", ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "torchvision", "numpy",
                                                                        "robustbench_lr") if k in v)))
        if run.get("device"):
            items.append(("device", f"{run['device']} (processes: {run.get('world_size', 1)})"))
    datasets = sorted(set(r["dataset"].dropna())) if "dataset" in r else []
    items.append(("dataset / split", f"{', '.join(datasets)} / test"))
    seeds = {str(run.get("config", {}).get("seed")) for run in bundle.runs if run.get("config")}
    split_seeds = {str(run.get("split_seed")) for run in bundle.runs if "split_seed" in run}
    train_seeds = sorted({str(int(s)) for s in r.get("train_seed", pd.Series(dtype=float)).dropna()})
    items.append(("seeds", f"attack/deformation {', '.join(sorted(seeds)) or 'n/a'}; split {', '.join(sorted(split_seeds)) or 'n/a'}; "
                           f"training {', '.join(train_seeds) or 'n/a'}"))
    commits = {}
    for run in bundle.runs:
        for lab, c in (run.get("checkpoints") or {}).items():
            commits[lab] = f"{c.get('model', {}).get('name', '?')} sha256 {str(c.get('sha256', ''))[:12]}"
    for lab, desc in commits.items():
        items.append((f"checkpoint {lab}", desc))
    return items


def build_report(run_dirs: list[str | os.PathLike], out_pdf: str | os.PathLike,
                 extra_figures: list[tuple[str, Figure, str]] | None = None) -> dict[str, Any]:
    """Write the PDF and its tables; returns {'pdf': path, 'tables': folder, 'failed_checks': n}."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm
    from reportlab.platypus import KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer

    bundle = load_runs(run_dirs)
    out_pdf = Path(out_pdf)
    if out_pdf.suffix.lower() != ".pdf":
        raise UserError(f"-o {out_pdf}: the report is a PDF; give a path ending in .pdf.")
    res, st = bundle.results, _styles()
    norms = [n for n in ("linf", "l2") if (res["family"] == n).any()]
    tables: list[T.ReportTable] = []
    hyg_t = T.hygiene_table(bundle.hygiene)
    summaries = [t for t in [*(T.attack_summary(res, n) for n in norms), T.deform_summary(res)] if t is not None]
    k_cols = _kernel_columns(res)
    k_t = T.kernel_summary(res, [(p, v) for _, p, v in k_cols if p != "clean"]) if k_cols else None
    pair_t = T.paired_table(bundle.paired)
    tables = [t for t in [hyg_t, *summaries, k_t, pair_t] if t is not None]
    drift = res[res["family"] == "drift"] if "family" in res else pd.DataFrame()
    if not drift.empty:
        tables.append(_drift_table(drift))

    width = A4[0] - 3 * cm
    story: list[Any] = [Paragraph("robustbench-lr report", st["title"])]
    n_fail = int((bundle.hygiene["status"] == "fail").sum()) if not bundle.hygiene.empty else 0
    if n_fail:
        story.append(Paragraph(f"WARNING: {n_fail} hygiene check(s) FAILED. The robust accuracies below may "
                               f"overstate robustness; see 'Evaluation hygiene'.", st["warn"]))
    elif bundle.hygiene.empty:
        story.append(Paragraph("WARNING: no hygiene checks were run for these results.", st["warn"]))
    story.append(Paragraph("Provenance", st["h1"]))
    for label, value in provenance(bundle):
        style = st["code"] if label == "command" else st["body"]
        story.append(Paragraph(f"<b>{_esc(label)}</b>: {_esc(value)}", style))
    story.append(Paragraph("Evaluation hygiene", st["h1"]))
    for line in X.describe_hygiene(bundle.hygiene):
        story.append(Paragraph(_esc(line), st["body"]))
    if hyg_t is not None:
        story += _table_flowables(hyg_t, st, width, max_cols=9)
    story.append(PageBreak())

    story.append(Paragraph("Summary", st["h1"]))
    for n in norms:
        for line in X.describe_attacks(res, bundle.paired, n):
            story.append(Paragraph(_esc(line), st["body"]))
    for line in X.describe_deform(res):
        story.append(Paragraph(_esc(line), st["body"]))
    for t in summaries:
        story += _table_flowables(t, st, width)
    if pair_t is not None:
        story += _table_flowables(pair_t, st, width, max_cols=8)

    curves: list[tuple[str, Figure, str]] = []
    for n in norms:
        f = F.eps_curves(res, n)
        if f is not None:
            curves.append((f"Robust accuracy vs eps ({n})", f, "Lines: accuracy on the same examples; bands: 95% "
                                                                "Clopper-Pearson intervals."))
    f = F.deform_curves(res)
    if f is not None:
        curves.append(("Accuracy vs deformation strength", f, "Bands: 95% intervals (t over random draws, or "
                                                               "Clopper-Pearson for adversarial deformations)."))
    for i, (title, fig, cap) in enumerate(curves):
        head = [Paragraph("Curves", st["h1"])] if i == 0 else []  # kept with the first figure: no orphan heading
        story.append(KeepTogether([*head, Paragraph(_esc(title), st["h2"]), _figure_flowable(fig, width, 9.5 * cm),
                                   Paragraph(_esc(cap), st["small"]), Spacer(1, 6)]))
    if k_t is not None:
        story.append(PageBreak())
        story.append(Paragraph("Kernel size", st["h1"]))
        for line in X.describe_kernel(res, k_cols):
            story.append(Paragraph(_esc(line), st["body"]))
        story += _table_flowables(k_t, st, width)
        f = F.kernel_curves(res, k_cols)
        if f is not None:
            story.append(_figure_flowable(f, width, 9.5 * cm))
            story.append(Paragraph("Lines: mean over training seeds; bands: t-interval over seeds.", st["small"]))
    model_figs = [(t, p, c) for t, p, c in bundle.figures] + [(t, f, c) for t, f, c in (extra_figures or [])]
    if model_figs or not drift.empty:
        story.append(PageBreak())
        story.append(Paragraph("Pairwise weights, priors, attention shift and attributions", st["h1"]))
        if not drift.empty:
            story += _table_flowables(tables[-1], st, width)
        for title, fig, cap in model_figs:
            # portrait figures (one row per layer or group) get up to a page, so their labels stay legible
            tall = _aspect(fig) > 0.9
            story.append(KeepTogether([Paragraph(_esc(title), st["h2"]),
                                       _figure_flowable(fig, width, (23 if tall else 11) * cm),
                                       Paragraph(_esc(cap), st["small"]), Spacer(1, 6)]))

    folder = out_pdf.parent / f"{out_pdf.stem}_tables"
    write_tables(tables, folder)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_pdf.parent, prefix=f".{out_pdf.name}.", suffix=".tmp")
    os.close(fd)
    try:
        doc = SimpleDocTemplate(tmp, pagesize=A4, leftMargin=1.5 * cm, rightMargin=1.5 * cm, topMargin=1.4 * cm,
                                bottomMargin=1.4 * cm, title="robustbench-lr report", author="robustbench-lr")
        doc.build(story, onFirstPage=_footer, onLaterPages=_footer)
        os.replace(tmp, out_pdf)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"pdf": str(out_pdf), "tables": str(folder), "failed_checks": n_fail}


def _footer(canvas: Any, doc: Any) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica", 7)
    canvas.drawRightString(doc.pagesize[0] - doc.rightMargin, 0.8 * 28.35, f"robustbench-lr report, page {doc.page}")
    canvas.restoreState()


def _kernel_columns(res: pd.DataFrame) -> list[tuple[str, str, float]]:
    """Panels of the kernel-size section: clean, then the middle strength of each perturbation."""
    if not T.is_kernel_sweep(res):
        return []
    cols = [("clean accuracy", "clean", 0.0)]
    for pert, g in res[~res["family"].isin(["clean", "drift"])].groupby("perturbation", sort=False):
        g = g[g["param_value"] > 0]
        if g.empty:
            continue
        # the strength at which the models differ most (the most informative panel)
        spread = g.groupby("param_value")["accuracy"].agg(lambda a: a.max() - a.min())
        v = float(spread.idxmax())
        cols.append((f"{pert} {g['param_name'].iloc[0]}={T.fmt_strength(v)}", pert, v))
    return cols


def _drift_table(drift: pd.DataFrame) -> T.ReportTable:
    d = drift[["model", "perturbation", "param_value", "layer", "js_mean", "js_std"]].copy()
    disp = d.assign(param_value=d["param_value"].map(T.fmt_strength), js_mean=d["js_mean"].map(lambda v: f"{v:.4f}"),
                    js_std=d["js_std"].map(lambda v: f"{v:.4f}")).rename(
        columns={"perturbation": "attack", "param_value": "eps", "js_mean": "mean JS", "js_std": "sd"})
    return T.ReportTable("attention_drift", "Attention drift under attack (Jensen-Shannon divergence)",
                         d.reset_index(drop=True), disp.reset_index(drop=True),
                         "Mean JS divergence between clean and adversarial aggregation weights of each LR layer, "
                         "over pixels, groups and examples.")
