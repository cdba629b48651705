"""The report's curves (report.figures, report.summary_curve) on synthetic results: Figures whose axes carry labels
with units, one style, the deformation units, the worst-of-k curve's 0 point and the summary figure."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from robustbench_lr.report import figures as F
from robustbench_lr.report.summary_curve import min_norm_curves
from robustbench_lr.results.stats import clopper_pearson
from robustbench_lr.viz import _draw as D

UNIT = re.compile(r"\(.+\)")  # 'eps (linf, pixel values in [0, 1])', 'accuracy (%)', 'rotation (degrees)'


def _rows(model: str, acc: list[float], **kw) -> list[dict]:
    out = []
    for v, a in zip(kw.pop("values"), acc):
        lo, hi = clopper_pearson(round(a * 300), 300)
        out.append({"model": model, "n_total": 300, "accuracy": a, "ci_low": lo, "ci_high": hi, **kw,
                    "param_value": v, "eps": v if kw.get("family") in ("linf", "l2") else np.nan})
    return out


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    rows = []
    for m, s in (("lr", 1.0), ("conv", 0.8)):
        rows += _rows(m, [0.93], family="clean", perturbation="clean", attack="clean", param_name="eps", values=[0.0])
        for atk, f in (("fgsm", 1.0), ("pgd", 0.5), ("worst-case", 0.5)):
            rows += _rows(m, [0.6 * s * f, 0.2 * s * f, 0.05 * f], family="linf", perturbation=atk, attack=atk,
                          norm="linf", param_name="eps", values=[0.1, 0.2, 0.3])
        rows += _rows(m, [0.93, 0.8 * s, 0.6 * s], family="deform", perturbation="rotate", param_name="degrees",
                      values=[0.0, 10.0, 20.0])
        rows += _rows(m, [0.7 * s, 0.5 * s], family="deform", perturbation="worst-of-k", param_name="max_rotation",
                      values=[10.0, 20.0])
    return pd.DataFrame(rows)


def _labelled(fig: Figure) -> list:
    """The data axes (not colour bars) of a figure; each must have an x and a y label with a unit."""
    axes = [ax for ax in fig.axes if ax.lines or ax.collections]
    assert axes
    for ax in axes:
        x, y = ax.get_xlabel(), ax.get_ylabel()
        assert UNIT.search(x), f"x label without a unit: {x!r}"
        assert "(%)" in y, f"y label without a unit: {y!r}"
        assert "_" not in x, f"raw column name as a label: {x!r}"
        assert ax.title.get_fontsize() >= D.SMALL and ax.xaxis.label.get_fontsize() >= D.SMALL
        assert all(t.get_fontsize() >= D.SMALL for t in ax.get_xticklabels())
    assert fig.get_figwidth() <= D.PAGE_WIDTH + 1e-9
    return axes


def test_every_curve_has_labels_with_units(results):
    kr = pd.concat([results.assign(kernel_size=k, model_name="lrnet_tiny") for k in (3, 7)])
    figs = {"summary": F.robustness_curves(results, None, "linf"), "eps": F.eps_curves(results, "linf"),
            "deform": F.deform_curves(results), "kernel": F.kernel_curves(kr, F.kernel_columns(kr))}
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        _labelled(fig)
    assert F.eps_curves(results, "l2") is None and F.robustness_curves(results, None, "l2") is None


def test_eps_curves_leave_the_worst_case_to_the_summary(results):
    titles = [ax.get_title() for ax in F.eps_curves(results, "linf").axes if ax.lines]
    assert titles == ["fgsm", "pgd"]


def test_deformation_axes_have_units_and_the_spatial_attack_starts_at_zero(results):
    fig = F.deform_curves(results)
    axes = {ax.get_title(): ax for ax in fig.axes if ax.lines}
    assert axes["rotate"].get_xlabel() == "rotation (degrees)"
    assert axes["worst-of-k"].get_xlabel() == "maximum rotation (degrees)"
    x, y = axes["worst-of-k"].lines[0].get_data()
    assert x[0] == 0.0 and y[0] == pytest.approx(93.0)  # bound 0: the clean accuracy


def test_summary_figure_is_the_worst_case_on_one_axis(results):
    fig = F.robustness_curves(results, None, "linf")
    ax = [a for a in fig.axes if a.lines][0]
    assert len(ax.lines) == 2  # one line per model
    x, y = ax.lines[0].get_data()
    assert list(x) == [0.0, 0.1, 0.2, 0.3]
    assert list(np.round(y, 6)) == [93.0, 30.0, 10.0, 2.5]  # the worst-case rows (0.5 x fgsm), clean at 0
    assert "solid: worst case of fgsm, pgd" in fig.get_suptitle()
    assert ax.get_legend_handles_labels()[1][0] in set(results["model"])  # the legend names the models
    one = results[~results["attack"].isin(["fgsm", "worst-case"])]
    assert "solid: pgd;" in F.robustness_curves(one, None, "linf").get_suptitle()  # one attack: itself
    # two runs of the same models at the same eps (e.g. differently masked attacks): still one line per model,
    # through the lower of the two rows
    lower = results[results["attack"] == "worst-case"].assign(accuracy=lambda d: d["accuracy"] / 2,
                                                              ci_low=0.0, ci_high=1.0)
    from robustbench_lr.report.summary_curve import several_runs_at_one_eps

    both = pd.concat([results, lower], ignore_index=True)
    assert several_runs_at_one_eps(both, "linf") and not several_runs_at_one_eps(results, "linf")
    ax2 = [a for a in F.robustness_curves(both, None, "linf").axes if a.lines][0]
    assert len(ax2.lines) == 2
    assert list(np.round(ax2.lines[0].get_data()[1], 6)) == [93.0, 15.0, 5.0, 1.25]


def test_summary_figure_draws_the_full_minimal_norm_curve(results):
    rng = np.random.default_rng(0)
    norms = {"lr": rng.uniform(0, 0.4, 200), "conv": rng.uniform(0, 0.2, 200)}
    norms["lr"][:10] = 0.0  # clean-wrong examples
    outcomes = pd.DataFrame([{"model": m, "attack": "fmn", "norm": "linf", "example": i, "dataset_index": i,
                              "min_norm": v} for m, vs in norms.items() for i, v in enumerate(vs)])
    curves = min_norm_curves(outcomes, "linf", 0.3, points=31)
    c = curves["lr"]
    for e, a, lo, hi in zip(c["eps"], c["accuracy"], c["ci_low"], c["ci_high"]):
        k = int((norms["lr"] > e).sum())
        assert a == pytest.approx(k / 200) and (lo, hi) == pytest.approx(clopper_pearson(k, 200))
    assert c["accuracy"].is_monotonic_decreasing and c["accuracy"].iloc[0] == pytest.approx(0.95)
    fig = F.robustness_curves(results, outcomes, "linf")
    ax = [a for a in fig.axes if a.lines][0]
    assert len(ax.lines) == 4  # per model: the worst case at the run's eps and the minimal-norm curve
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 2 and len(dashed[0].get_xdata()) > 100
    _labelled(fig)
