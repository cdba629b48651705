"""The PDF report (tables, curves, text), its table files, and the demo end to end at a tiny scale."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from matplotlib.figure import Figure

from robustbench_lr.cli import main
from robustbench_lr.report import build_report, read_tables_json
from robustbench_lr.report import figures as F


def _text(pdf) -> str:
    from pypdf import PdfReader

    reader = PdfReader(str(pdf))
    assert len(reader.pages) >= 2
    return "\n".join(p.extract_text() for p in reader.pages)


@pytest.fixture(scope="module")
def run_dir(tiny_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    assert main(["evaluate", "--checkpoint", tiny_checkpoints["conv"], "--checkpoint", tiny_checkpoints["lr"],
                 "--attack", "fgsm", "--attack", "pgd", "--eps", "0,0.1,0.3", "--steps", "5", "--n", "40",
                 "--check-n", "16", "--quiet", "--out", str(out)]) == 0
    return out


def test_report_pdf_opens_and_has_its_sections(run_dir, tmp_path):
    pdf = tmp_path / "r" / "report.pdf"
    out = build_report([run_dir], pdf)
    text = _text(pdf)
    for title in ("Provenance", "Evaluation hygiene", "Summary", "Robust accuracy under linf attacks",
                  "Paired comparisons", "Curves", "Robust accuracy of every model on the same test examples"):
        assert title in text, title
    assert "exact McNemar" in text and "Clopper-Pearson" in text
    folder = tmp_path / "r" / "report_tables"
    for name in ("hygiene", "summary_linf", "paired"):
        for ext in ("csv", "md", "tex"):
            assert (folder / f"{name}.{ext}").stat().st_size > 0
    assert out["tables"] == str(folder)


def test_pdf_text_has_the_settings_of_every_attack_it_reports(run_dir, tmp_path):
    """Every attack of the results appears with its settings (steps, step size, restarts, random start, early stop,
    implementation) on page 1 and in the note of its table."""
    from robustbench_lr.report.labels import settings_text

    build_report([run_dir], tmp_path / "report.pdf")
    flat = "".join(_text(tmp_path / "report.pdf").split())
    res = pd.read_csv(run_dir / "results.csv")
    attacks = res[(res["family"] == "linf") & (res["attack"] != "worst-case")]
    assert set(attacks["attack"]) == {"fgsm", "pgd"}
    for atk, rows in attacks.groupby("attack"):
        text = settings_text(rows.sort_values("eps").iloc[-1].to_dict())
        assert "".join(text.split()) in flat, text
        assert flat.count("".join(text.split())) >= 2, f"{atk}: on page 1 and next to its table"
    pgd = settings_text(attacks[attacks["attack"] == "pgd"].sort_values("eps").iloc[-1].to_dict())
    for part in ("5 steps", "step size 0.5 eps", "1 restart", "random start", "early stop", "StreamingPGD"):
        assert part in pgd
    assert "cleantraining" in flat  # the training threat model of each model


def test_report_tables_json_round_trips(run_dir, tmp_path):
    build_report([run_dir], tmp_path / "report.pdf")
    back = read_tables_json(tmp_path / "report_tables" / "tables.json")
    csv = pd.read_csv(tmp_path / "report_tables" / "summary_linf.csv")
    pd.testing.assert_frame_equal(back["summary_linf"]["data"].reset_index(drop=True), csv, check_dtype=False)
    md = (tmp_path / "report_tables" / "summary_linf.md").read_text()
    for cell in back["summary_linf"]["display"].iloc[:, 1]:
        assert str(cell) in md


def test_curve_functions_return_figures_with_content(run_dir):
    res = pd.read_csv(run_dir / "results.csv")
    fig = F.eps_curves(res, "linf")
    assert isinstance(fig, Figure) and fig.axes and all(ax.lines for ax in fig.axes)
    deform = res[res["family"] == "clean"].assign(family="deform", perturbation="rotate", param_name="degrees")
    deform = pd.concat([deform.assign(param_value=v) for v in (0.0, 10.0)])
    fig = F.deform_curves(deform)
    assert isinstance(fig, Figure) and all(ax.lines for ax in fig.axes)
    ks = pd.concat([res.assign(kernel_size=k, model_name="m") for k in (3, 5)])
    fig = F.kernel_curves(ks, [("clean accuracy", "clean", 0.0)])
    assert isinstance(fig, Figure) and fig.axes[0].lines
    assert F.eps_curves(res, "l2") is None


def test_report_cli_errors(tmp_path):
    assert main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.pdf")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.pdf")]) == 2
    assert not (tmp_path / "r.pdf").exists()


def test_a_failed_hygiene_check_puts_a_warning_on_page_one(run_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(run_dir, d)
    h = pd.read_csv(d / "hygiene.csv")
    h.loc[0, "status"] = "fail"
    h.to_csv(d / "hygiene.csv", index=False)
    build_report([d], tmp_path / "r.pdf")
    from pypdf import PdfReader

    assert "FAILED" in PdfReader(str(tmp_path / "r.pdf")).pages[0].extract_text()


@pytest.mark.slow
def test_demo_end_to_end_and_rerun_reuses_work(tmp_path, monkeypatch, caplog):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--epochs", "1", "--train-limit", "256", "--n", "32", "--check-n", "12",
            "--draws", "1", "--steps", "5", "--quiet"]
    assert main(args) == 0
    text = _text(out / "report.pdf")
    for title in ("Provenance", "Summary", "Accuracy under deformations", "Pairwise weights", "Attributions"):
        assert title in text, title
    res = pd.read_csv(out / "results.csv")
    assert {"clean", "linf", "deform", "drift"} <= set(res["family"])
    # a re-run reuses the checkpoints and every finished cell: no attack and no deformation runs again
    import robustbench_lr.runners.eps_sweep as sweep
    import robustbench_lr.runners.deform as ed

    def boom(*a, **k):
        raise AssertionError("finished work was redone")

    monkeypatch.setattr(sweep, "build_attack", boom)
    monkeypatch.setattr(ed, "random_sweep", boom)
    monkeypatch.setattr(ed, "adversarial_sweep", boom)
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert caplog.text.count("already trained") == 2


def test_demo_rejects_an_unknown_model_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", "resnet_tiny_glor", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "resnet_tiny_glore" in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*.safetensors"))


@pytest.mark.slow
def test_demo_takes_other_families(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--model", "resnet_tiny_glore", "--model", "lrnet_tiny", "--epochs", "1",
            "--train-limit", "128", "--n", "16", "--check-n", "8", "--draws", "1", "--steps", "3", "--quiet"]
    assert main(args) == 0
    res = pd.read_csv(out / "results.csv")
    assert set(res["model_name"]) == {"resnet_tiny_glore", "lrnet_tiny"}
    assert (out / "checkpoints" / "resnet_tiny_glore" / "model.safetensors").exists()


def test_hygiene_table_of_many_models_is_a_model_by_check_matrix():
    from robustbench_lr.report.tables import MATRIX_MODELS, hygiene_table

    models = [f"m{i}" for i in range(MATRIX_MODELS + 1)]
    rows = [{"model": m, "check": c, "status": "fail" if (m, c) == ("m1", "double_steps") else "pass",
             "value": 0.02 if (m, c) == ("m1", "double_steps") else 0.0, "threshold": 0.01, "n": 100, "detail": ""}
            for m in models for c in ("deterministic", "double_steps")]
    t = hygiene_table(pd.DataFrame(rows))
    assert len(t.data) == 2 * len(models)  # the CSV keeps every row
    assert list(t.display.columns) == ["model", "deterministic", "double_steps"]
    assert list(t.display["model"]) == models
    assert t.display.set_index("model").loc["m1", "double_steps"] == "FAIL 0.02"
    assert t.display.set_index("model").loc["m0", "double_steps"] == "PASS"
    few = hygiene_table(pd.DataFrame([r for r in rows if r["model"] in models[:2]]))
    assert "detail" in few.display.columns  # few models: the long table with details


def test_paired_table_of_many_models_keeps_the_worst_case_in_the_pdf_and_every_row_in_the_csv():
    from robustbench_lr.report.tables import MAX_PAIRED_ROWS, paired_table

    def rows(n_models: int) -> pd.DataFrame:
        models = [f"m{i}" for i in range(n_models)]
        pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
        return pd.DataFrame([{"attack": att, "norm": "linf", "eps": e, "model_a": a, "model_b": b, "n": 100,
                              "correct_a": 60, "correct_b": 50, "a_only": 12, "b_only": 2, "accuracy_diff": 0.1,
                              "mcnemar_p": 0.01}
                             for att in ("pgd", "fgsm", "worst-case") for e in (0.1, 0.2) for a, b in pairs])

    big = rows(12)  # 66 pairs x 3 attacks x 2 eps = 396 rows
    assert len(big) > MAX_PAIRED_ROWS
    t = paired_table(big)
    assert len(t.data) == len(big)  # the CSV keeps every attack
    assert set(t.display["attack"]) == {"worst-case"} and len(t.display) == 132
    assert "only those of the per-example worst case" in t.note and "396" in t.note
    small = paired_table(rows(3))  # 18 rows: every attack in the PDF
    assert set(small.display["attack"]) == {"pgd", "fgsm", "worst-case"} and len(small.display) == 18
    assert "worst case over the attacks" not in small.note
