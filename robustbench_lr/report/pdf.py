"""The PDF report: provenance (with every attack's settings and each model's training threat model), hygiene,
the summary figure (robust accuracy vs eps of every model on one axis), summary tables with intervals and
significance marks (`report.marks`), paired tests, curves, model figures.

`build_report(run_dirs, out_pdf)` reads the run directories of `evaluate` / `sweep` / `demo` through
`results.load_runs`, writes the PDF atomically, and writes every table next to it as CSV, Markdown and LaTeX,
plus all of them in one JSON file (`<stem>_tables/tables.json`, see `tables_out`). It never imports training or
checkpoint code: everything it states comes from the run directories (run.json's provenance included).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ..errors import UserError
from ..results.rundir import RunBundle, load_runs
from . import figures as F
from . import tables as T
from . import text as X
from .layout import esc, figure_flowable, styles, table_flowables, write_pdf
from .provenance import provenance
from .tables_out import write_tables


def build_report(run_dirs: list[str | os.PathLike], out_pdf: str | os.PathLike,
                 extra_figures: list[tuple[str, Figure, str]] | None = None) -> dict[str, Any]:
    """Write the PDF and its tables; returns {'pdf': path, 'tables': folder, 'failed_checks': n}."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm

    out_pdf = Path(out_pdf)
    if out_pdf.suffix.lower() != ".pdf":
        raise UserError(f"-o {out_pdf}: the report is a PDF; give a path ending in .pdf.")
    bundle = load_runs(run_dirs)
    ctx = _Context(bundle, styles(), A4[0] - 3 * cm, cm)
    story = [*_front(ctx), *_summary(ctx), *_curves(ctx), *_kernel(ctx), *_model_figures(ctx, extra_figures)]
    folder = out_pdf.parent / f"{out_pdf.stem}_tables"
    write_tables(ctx.tables, folder)
    write_pdf(story, out_pdf)
    return {"pdf": str(out_pdf), "tables": str(folder), "failed_checks": ctx.n_fail}


class _Context:
    """What the sections of one report share: the data, styles, page width and the tables made so far."""

    def __init__(self, bundle: RunBundle, st: dict[str, Any], width: float, cm: float) -> None:
        self.bundle, self.st, self.width, self.cm = bundle, st, width, cm
        self.res = bundle.results
        self.norms = [n for n in ("linf", "l2") if (self.res["family"] == n).any()]
        self.tables: list[T.ReportTable] = []
        h = bundle.hygiene
        self.n_fail = int((h["status"] == "fail").sum()) if not h.empty else 0

    def keep(self, t: T.ReportTable | None) -> T.ReportTable | None:
        if t is not None:
            self.tables.append(t)
        return t

    def para(self, text: str, style: str = "body") -> Any:
        from reportlab.platypus import Paragraph

        return Paragraph(esc(text), self.st[style])


def _front(c: _Context) -> list[Any]:
    from reportlab.platypus import CondPageBreak, Paragraph

    st, hyg = c.st, c.bundle.hygiene
    story: list[Any] = [Paragraph("robustbench-lr report", st["title"])]
    if c.n_fail:
        story.append(c.para(f"WARNING: {c.n_fail} hygiene check(s) FAILED. The robust accuracies below may overstate "
                            f"robustness; see 'Evaluation hygiene'.", "warn"))
    elif hyg.empty:
        story.append(c.para("WARNING: no hygiene checks were run for these results.", "warn"))
    story.append(Paragraph("Provenance", st["h1"]))
    for label, value in provenance(c.bundle):
        style = st["code"] if label == "command" else st["body"]
        story.append(Paragraph(f"<b>{esc(label)}</b>: {esc(value)}", style))
    story.append(Paragraph("Evaluation hygiene", st["h1"]))
    story += [c.para(line) for line in X.describe_hygiene(hyg)]
    hyg_t = c.keep(T.hygiene_table(hyg))
    if hyg_t is not None:
        story += table_flowables(hyg_t, st, c.width, max_cols=9)
    return [*story, CondPageBreak(12 * c.cm)]  # the summary starts on a new page unless most of one is left


def _summary(c: _Context) -> list[Any]:
    from reportlab.platypus import KeepTogether, Paragraph, Spacer

    story: list[Any] = [Paragraph("Summary", c.st["h1"])]
    for n in c.norms:
        story += [c.para(line) for line in X.describe_attacks(c.res, c.bundle.paired, n)]
    story += [c.para(line) for line in X.describe_deform(c.res, c.bundle.paired)]
    for n in c.norms:
        f = F.robustness_curves(c.res, c.bundle.outcomes, n)
        if f is not None:
            story.append(KeepTogether([figure_flowable(f, c.width, 10 * c.cm),
                                       c.para(_summary_caption(c, n), "small"), Spacer(1, 6)]))
    tables = [T.attack_summary(c.res, n, c.bundle.paired, c.bundle.outcomes) for n in c.norms]
    tables += T.deform_summaries(c.res, c.bundle.paired, c.bundle.outcomes)
    for t in tables:
        if c.keep(t) is not None:
            story.append(KeepTogether(table_flowables(t, c.st, c.width, max_cols=8)))
    pair_t = c.keep(T.paired_table(c.bundle.paired))
    if pair_t is not None:
        story += table_flowables(pair_t, c.st, c.width, max_cols=8)
    return story


def _summary_caption(c: _Context, norm: str) -> str:
    from .summary_curve import grid_worst_case, min_norm_curves, several_runs_at_one_eps

    _, attacks = grid_worst_case(c.res, norm)
    text = (f"Robust accuracy of every model on the same test examples ({norm}); eps 0 is the clean accuracy. "
            + (f"Solid: the per-example worst case over {', '.join(attacks)} (an example counts as robust only if "
               f"every attack failed on it), at the eps of the run only. " if len(attacks) > 1 else
               f"Solid: {attacks[0]}, at the eps of the run only. "))
    if several_runs_at_one_eps(c.res, norm):
        text += ("Where several runs measured a model at the same eps, the curve takes the lowest of their "
                 "accuracies (a bound from above on the per-example worst case across the runs). ")
    if min_norm_curves(c.bundle.outcomes, norm, 1.0, points=2):
        text += ("Dashed: minimal-norm attacks, accuracy at every eps from each example's smallest adversarial "
                 "perturbation. ")
    return text + "Bands: 95% Clopper-Pearson intervals over the examples."


def _curves(c: _Context) -> list[Any]:
    from reportlab.platypus import KeepTogether, Paragraph, Spacer

    curves: list[tuple[str, Figure, str]] = []
    for n in c.norms:
        f = F.eps_curves(c.res, n)
        if f is not None:
            curves.append((f"Robust accuracy vs eps per attack ({n})", f,
                           "One panel per attack, one line per model, on the same examples; eps 0 is the clean "
                           "accuracy; bands: 95% Clopper-Pearson intervals over the examples. The per-example worst "
                           "case over the attacks is the summary figure."))
    f = F.deform_curves(c.res)
    if f is not None:
        curves.append(("Accuracy vs deformation strength", f,
                       "Bands: 95% intervals: a t-interval over the random draws for random deformations (a "
                       "Clopper-Pearson interval where one draw ran, e.g. at 0), Clopper-Pearson over the examples "
                       "for spatial attacks (worst-of-k: the worst of k random rotations and translations per "
                       "example within the bound), whose bound-0 point is the clean accuracy."))
    story = []
    for i, (title, fig, cap) in enumerate(curves):
        head = [Paragraph("Curves", c.st["h1"])] if i == 0 else []  # kept with the first figure: no orphan heading
        story.append(KeepTogether([*head, Paragraph(esc(title), c.st["h2"]),
                                   figure_flowable(fig, c.width, 11 * c.cm), c.para(cap, "small"), Spacer(1, 6)]))
    return story


def _kernel(c: _Context) -> list[Any]:
    from reportlab.platypus import PageBreak, Paragraph

    k_cols = T.kernel_columns(c.res)
    k_t = c.keep(T.kernel_summary(c.res, k_cols))
    if k_t is None:
        return []
    story: list[Any] = [PageBreak(), Paragraph("Kernel size", c.st["h1"])]
    story += [c.para(line) for line in X.describe_kernel(c.res, k_cols)]
    story += table_flowables(k_t, c.st, c.width)
    f = F.kernel_curves(c.res, k_cols)
    if f is not None:
        story += [figure_flowable(f, c.width, 9.5 * c.cm),
                  c.para("Lines: mean over training seeds; bands: t-interval over seeds.", "small")]
    return story


def _model_figures(c: _Context, extra: list[tuple[str, Figure, str]] | None) -> list[Any]:
    from reportlab.platypus import KeepTogether, PageBreak, Paragraph, Spacer

    drift = c.res[c.res["family"] == "drift"] if "family" in c.res else pd.DataFrame()
    figs = [(f["title"], f["path"], f.get("caption", "")) for f in c.bundle.figures] + list(extra or [])
    if not figs and drift.empty:
        return []
    story: list[Any] = [PageBreak(), Paragraph("Pairwise weights, priors, attention shift and attributions",
                                               c.st["h1"])]
    if not drift.empty:
        story += table_flowables(c.keep(_drift_table(drift)), c.st, c.width)
    for title, fig, cap in figs:  # every figure at its own size (at most a page: viz._draw.PAGE_HEIGHT)
        story.append(KeepTogether([Paragraph(esc(title), c.st["h2"]), figure_flowable(fig, c.width, 23.6 * c.cm),
                                   c.para(cap, "small"), Spacer(1, 6)]))
    return story


def _drift_table(drift: pd.DataFrame) -> T.ReportTable:
    """Mean JS divergence per (model, attack, eps, layer); the eps heading names the norm (from the rows, which
    record it since the figure records do; older runs: the norm is not known)."""
    norm = str(drift["norm"].dropna().iloc[0]) if "norm" in drift and drift["norm"].notna().any() else ""
    eps_col = f"eps ({norm})" if norm else "eps"
    d = drift[["model", "perturbation", "param_value", "layer", "js_mean", "js_std"]].copy()
    disp = d.assign(param_value=d["param_value"].map(T.fmt_strength), js_mean=d["js_mean"].map(lambda v: f"{v:.4f}"),
                    js_std=d["js_std"].map(lambda v: f"{v:.4f}")).rename(
        columns={"perturbation": "attack", "param_value": eps_col, "js_mean": "mean JS", "js_std": "sd"})
    steps = f", {int(drift['steps'].dropna().iloc[0])} steps" if "steps" in drift and drift["steps"].notna().any() \
        else ""
    return T.ReportTable("attention_drift", "Attention drift under attack (Jensen-Shannon divergence)",
                         d.reset_index(drop=True), disp.reset_index(drop=True),
                         f"Mean JS divergence between clean and adversarial aggregation weights of each LR layer, "
                         f"over pixels, groups and examples. {eps_col}: the attack's bound{steps}, in pixel values "
                         f"in [0, 1]{'' if norm else ' (norm not recorded by this run)'}.")
