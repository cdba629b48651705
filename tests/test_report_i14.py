"""The report's kernel-size section, provenance lines and attention-drift table (issue 14): clean first, labels
with units, no worst-case panel that repeats the only attack, spatial-attack bounds in degrees and pixels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from robustbench_lr.report import figures as F
from robustbench_lr.report import tables as T
from robustbench_lr.report.labels import column_label
from robustbench_lr.report.provenance import _deformation_lines

KERNEL_RESULTS = Path(__file__).resolve().parents[1] / "reports" / "kernel_size" / "results.csv"


@pytest.fixture(scope="module")
def kernel() -> pd.DataFrame:
    if not KERNEL_RESULTS.is_file():
        pytest.skip("reports/kernel_size/results.csv is not in this checkout")
    return pd.read_csv(KERNEL_RESULTS)


def test_column_labels_carry_the_strength_and_its_unit():
    assert column_label("rotate", "degrees", 30.0) == "rotate 30\u00b0"
    assert column_label("translate", "pixels", 2.0) == "translate 2 px"
    assert column_label("worst-of-k", "max_rotation", 10.0) == "worst-of-k 10\u00b0"
    assert column_label("pgd", "eps", 0.02, "linf") == "pgd linf eps 0.02"
    assert column_label("scale", "factor", 1.2) == "scale factor 1.2"


def test_kernel_section_puts_clean_first_and_drops_a_worst_case_of_one_attack(kernel):
    """The committed sweep ran PGD only (plus its 'worst-case' copy): no worst-case panel or column."""
    assert set(kernel.loc[kernel["family"] == "linf", "perturbation"]) == {"pgd", "worst-case"}
    cols = F.kernel_columns(kernel)
    labels = [c[0] for c in cols]
    assert labels[0] == "clean accuracy" and not any("worst" in lab for lab in labels)
    assert "pgd linf eps 0.02" in labels and "rotate 30\u00b0" in labels
    assert not any("=" in lab for lab in labels)
    t = T.kernel_summary(kernel, cols)
    assert list(t.display.columns) == ["model", *labels]  # the table's headings are the figure's panel titles
    assert "pixel values" in t.note
    fig = F.kernel_curves(kernel, cols)
    assert [ax.get_title() for ax in fig.axes if ax.lines] == labels


def test_kernel_section_keeps_the_worst_case_of_two_attacks(kernel):
    fgsm = kernel[kernel["perturbation"] == "pgd"].assign(
        perturbation="fgsm", attack="fgsm", accuracy=lambda d: (d["accuracy"] + 0.05).clip(upper=1))
    labels = [c[0] for c in F.kernel_columns(pd.concat([kernel, fgsm], ignore_index=True))]
    assert labels[0] == "clean accuracy" and any(lab.startswith("worst-case linf eps") for lab in labels)


def test_provenance_gives_the_spatial_bounds_in_degrees_and_pixels():
    run = {"deformations": [{"name": "rotate", "strengths": [0, 10, 30], "draws": 2, "options": {}},
                            {"name": "worst-of-k", "strengths": [10, 20, 30], "draws": 5, "options": {}}]}
    res = pd.DataFrame({"perturbation": ["rotate", "worst-of-k"], "param_name": ["degrees", "max_rotation"],
                        "k": [None, 10.0], "translation_per_degree": [None, 0.1]})
    lines = dict(_deformation_lines(run, res))
    assert lines["deformation rotate"].startswith("rotation 0\u00b0, 10\u00b0, 30\u00b0; 2 random draws")
    wok = lines["deformation worst-of-k"]
    assert "10\u00b0, 20\u00b0, 30\u00b0" in wok and "translation up to 1, 2, 3 px" in wok and "k=10" in wok
    run["deformations"][1]["options"] = {"k": 4, "translation_per_degree": 0.2}
    wok = dict(_deformation_lines(run, res))["deformation worst-of-k"]
    assert "translation up to 2, 4, 6 px" in wok and "k=4" in wok


def test_attention_drift_table_names_the_norm_of_its_eps():
    from robustbench_lr.report.pdf import _drift_table

    d = pd.DataFrame({"model": ["lr"], "perturbation": ["pgd"], "param_value": [0.1], "layer": ["stem.3"],
                      "js_mean": [0.01], "js_std": [0.002], "norm": ["linf"], "steps": [20]})
    t = _drift_table(d)
    assert "eps (linf)" in t.display.columns and "pixel values" in t.note and "20 steps" in t.note
    old = _drift_table(d.drop(columns=["norm", "steps"]))  # a run from before the rows had the norm
    assert "eps" in old.display.columns and "not recorded" in old.note
