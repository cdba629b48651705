"""`robustbench-lr report RUN_DIR [RUN_DIR ...] -o report.pdf`: the PDF report of one or more runs."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..report import build_report
    from ..results import check_out_file, load_runs

    pdf = check_out_file(args.output, (".pdf",), option="-o")
    load_runs(args.run_dirs)  # the run directories are readable (else one clear error) before anything is written
    out = build_report(args.run_dirs, pdf)
    print(f"wrote {out['pdf']} (tables as CSV, Markdown, LaTeX and JSON in {out['tables']})")
    if out["failed_checks"]:
        print(f"warning: {out['failed_checks']} hygiene check(s) failed; page 1 of the report says which.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a PDF report (tables, curves, figures) of run directories",
                       description="Build a PDF report from the output directories of evaluate / sweep / demo. "
                                   "Example: robustbench-lr report runs/eval1 -o runs/eval1/report.pdf")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("-o", "--output", required=True, help="the PDF to write (tables go next to it)")
    p.set_defaults(func=run)
