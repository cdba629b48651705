"""robustbench_lr.viz and `robustbench-lr visualize`: figures, grid geometry, attention drift, attributions.

Uses the session checkpoints of conftest.py (resnet_tiny and lrnet_tiny on mnist5k). Set RBLR_VIZ_DIR to a
folder to keep the PNGs these tests render (to look at them).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_lr.cli import main
from robustbench_lr.errors import UserError

pytest.importorskip("matplotlib")
pytest.importorskip("captum")

from robustbench_lr import viz  # noqa: E402

LR_NAMES = ["stem.3", "stages.0.0.spatial", "stages.1.0.spatial", "stages.1.1.spatial", "stages.2.0.spatial",
            "stages.2.1.spatial"]
FAST_ATTR = {"n_steps": 4, "n_samples": 2, "n_baselines": 2, "window": 7, "stride": 7}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(tiny_checkpoints):
    """These tiny models run fastest on one thread; two threads on a shared 2-core machine spin on OpenMP
    barriers (seconds per captum call instead of milliseconds). Restored after the module; the session's
    checkpoints are trained before, with the usual threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    from robustbench_lr.checkpoint import load_model

    return {k: load_model(v) for k, v in tiny_checkpoints.items()}


@pytest.fixture(scope="module")
def images():
    from robustbench_lr.data import load_dataset

    ds = load_dataset("mnist5k", "test")
    x, y = ds.batch(torch.arange(4))
    return x, y


def _check_figure(fig, name: str) -> None:
    """A Figure whose axes all show something; rendered to PNG (kept under RBLR_VIZ_DIR if set)."""
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    assert fig.axes, "figure has no axes"
    for ax in fig.axes:
        drawn = ax.images or ax.lines or ax.patches or ax.collections or ax.texts
        assert drawn, f"{name}: an empty axes ({ax.get_title()!r})"
    assert any(ax.images for ax in fig.axes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("RBLR_VIZ_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(keep) / f"test_{name}.png", dpi=100)


# ---------------------------------------------------------------------------------------------- layers, geometry
def test_lr_layers_and_geometry(models):
    assert list(viz.lr_layers(models["lr"])) == LR_NAMES
    assert viz.lr_layers(models["conv"]) == {}
    geo = viz.layer_geometry(models["lr"], (1, 28, 28))
    assert [g.out_grid for g in geo.values()] == [(14, 14), (14, 14), (7, 7), (7, 7), (4, 4), (4, 4)]
    assert [g.in_stride for g in geo.values()] == [1, 2, 2, 4, 4, 8]
    assert [g.out_stride for g in geo.values()] == [2, 2, 4, 4, 8, 8]
    g = geo["stages.1.0.spatial"]
    assert g.out_box((3, 3)) == (10.0, 10.0, 4.0, 4.0)  # the 4 x 4 square centred on image pixel (12, 12)
    assert g.window_box((3, 3)) == (5.0, 5.0, 14.0, 14.0)  # input positions 3..9 at stride 2


def test_stride_mapping_follows_the_receptive_field(models):
    """A one-pixel change at image pixel (12, 12) moves each early layer's input around position 12 / S."""
    from robustbench_lr.viz.layers import capture_inputs

    m = models["lr"]
    geo = viz.layer_geometry(m, (1, 28, 28))
    x = torch.zeros(1, 1, 28, 28)
    x2 = x.clone()
    x2[0, 0, 12, 12] = 1.0
    names = LR_NAMES[:4]
    a, b = capture_inputs(m, x, names), capture_inputs(m, x2, names)
    for n in names:
        d = (a[n] - b[n]).abs().sum(1)[0]  # (h, w)
        ys = torch.arange(d.shape[0]).float()[:, None]
        xs = torch.arange(d.shape[1]).float()[None, :]
        s = geo[n].in_stride
        cy, cx = float((d * ys).sum() / d.sum()) * s, float((d * xs).sum() / d.sum()) * s
        assert abs(cy - 12) <= max(1.0, s / 2) and abs(cx - 12) <= max(1.0, s / 2), (n, cy, cx)


def test_aggregation_weights_helper(models, images):
    x, _ = images
    w = viz.aggregation_weights(models["lr"], x[:2], "stages.1.0.spatial")
    assert w.shape == (2, 2, 49, 7, 7)
    assert torch.allclose(w.sum(2), torch.ones(2, 2, 7, 7), atol=1e-5)
    assert (w[:, :, 0, 0, 0] == 0).all()  # offset (-3, -3) of the corner pixel is outside the map (border='mask')


# ---------------------------------------------------------------------------------------------- figures
def test_lr_figures(models, images):
    m, (x, _) = models["lr"], images
    x_adv = (x[1] + 0.2 * torch.randn_like(x[1])).clamp(0, 1)
    figs = {
        "pixel_weights": viz.plot_pixel_weights(m, x[1], "stages.1.0.spatial", (3, 3)),
        "pixel_weights_default": viz.plot_pixel_weights(m, x[1]),
        "overlay": viz.plot_weights_overlay(m, x[1], "stages.1.1.spatial", (3, 2)),
        "priors": viz.plot_geometry_priors(m, "stages.2.0.spatial"),
        "priors_logits": viz.plot_geometry_priors(m, "stem.3", logits=True),
        "evolution": viz.plot_prior_evolution(m),
        "shift": viz.plot_attention_shift(m, x[1], x_adv, "stages.2.0.spatial", (1, 2)),
    }
    for name, fig in figs.items():
        _check_figure(fig, name)


def test_attributions_any_model(models, images):
    x, y = images
    for kind, m in models.items():
        x_adv = (x[0] + 0.1 * torch.sign(torch.randn_like(x[0]))).clamp(0, 1)
        attr = viz.attributions(m, x[:2], y[:2], **FAST_ATTR)
        assert set(attr) == set(viz.DEFAULT_METHODS)
        for a in attr.values():
            assert a.shape == (2, 1, 28, 28) and torch.isfinite(a).all() and a.abs().sum() > 0
        _check_figure(viz.plot_attributions(m, x[0], x_adv, int(y[0]), **FAST_ATTR), f"attributions_{kind}")
    with pytest.raises(UserError, match="Available"):
        viz.attributions(models["conv"], x[:1], 0, ["Lime"])


# ---------------------------------------------------------------------------------------------- errors
def test_conv_model_has_no_pairwise_weights(models, images):
    x, _ = images
    for call in (lambda: viz.plot_pixel_weights(models["conv"], x[0]),
                 lambda: viz.plot_geometry_priors(models["conv"]),
                 lambda: viz.attention_drift(models["conv"], x, x, attack="pgd", eps=0.1, label="c")):
        with pytest.raises(UserError, match="attributions") as exc:
            call()
        assert "resnet_tiny has no local relation layers" in str(exc.value)


def test_bad_layer_and_pixel(models, images):
    x, _ = images
    with pytest.raises(UserError) as exc:
        viz.plot_pixel_weights(models["lr"], x[0], "stages.1.0", (0, 0))
    msg = str(exc.value)
    assert "Did you mean 'stages.1.0.spatial'" in msg and all(n in msg for n in LR_NAMES)
    with pytest.raises(UserError, match=r"7 x 7 output grid"):
        viz.plot_pixel_weights(models["lr"], x[0], "stages.1.0.spatial", (7, 0))


# ---------------------------------------------------------------------------------------------- drift
def test_js_divergence_by_hand():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([1.0, 0.0, 0.0])
    # M = (0.75, 0.25, 0); KL(P||M) = .5 ln(.5/.75) + .5 ln(.5/.25); KL(Q||M) = ln(1/.75)
    expected = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2.0) + math.log(1 / 0.75))
    assert float(viz.js_divergence(p, q)) == pytest.approx(expected, rel=1e-12)
    assert float(viz.js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))) == pytest.approx(math.log(2))
    same = viz.js_divergence(torch.tensor([[0.0, 0.3, 0.7]]), torch.tensor([[0.0, 0.3, 0.7]]))
    assert float(same) == 0.0 and not torch.isnan(same).any()


def test_attention_drift(models, images):
    m, (x, _) = models["lr"], images
    rows0 = viz.attention_drift(m, x, x, attack="none", eps=0.0, label="lr")
    assert [r["layer"] for r in rows0] == LR_NAMES
    assert all(set(r) == set(viz.DRIFT_KEYS) for r in rows0)
    assert all(r["js_mean"] == 0.0 and r["js_std"] == 0.0 for r in rows0)
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    rows = viz.attention_drift(m, x, x_adv, attack="noise", eps=0.1, label="lr", batch_size=3)
    r = rows[2]
    assert (r["model"], r["family"], r["perturbation"], r["param_name"], r["param_value"]) == \
        ("lr", "drift", "noise", "eps", 0.1)
    assert (r["n_examples"], r["n_pixels"], r["n_groups"]) == (4, 49, 2)
    assert all(0 < row["js_mean"] <= math.log(2) and row["js_std"] >= 0 for row in rows)
    # batching does not change the statistics
    ref = viz.attention_drift(m, x, x_adv, attack="noise", eps=0.1, label="lr")
    # batching changes float32 rounding of the forward pass only
    assert [row["js_mean"] for row in rows] == pytest.approx([row["js_mean"] for row in ref], rel=1e-4)
    assert [row["js_std"] for row in rows] == pytest.approx([row["js_std"] for row in ref], rel=1e-4)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_list_layers(tiny_checkpoints, capsys):
    assert main(["visualize", "--checkpoint", tiny_checkpoints["lr"], "--list-layers"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in LR_NAMES) and "7x7" in out


def test_cli_writes_png(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "figs" / "fig.png"
    assert main(["visualize", "--checkpoint", tiny_checkpoints["lr"], "--index", "3", "--layer",
                 "stages.1.0.spatial", "--pixel", "3,3", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file() and out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    shift = tmp_path / "shift.pdf"
    assert main(["visualize", "--checkpoint", tiny_checkpoints["lr"], "--kind", "shift", "--steps", "2",
                 "--layer", "stem.3", "--out", str(shift)]) == 0
    assert shift.read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["fig.png", "figs", "shift.pdf"]  # no temporary left


def test_cli_bad_input_is_one_line_and_no_file(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "fig.png"
    for args in (["--layer", "stages.9.spatial"], ["--layer", "stem.3", "--pixel", "99,0"]):
        assert main(["visualize", "--checkpoint", tiny_checkpoints["lr"], *args, "--out", str(out)]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and "error:" in err[0] and "Traceback" not in err[0]
        assert not out.exists() and not list(tmp_path.iterdir())
    assert main(["visualize", "--checkpoint", tiny_checkpoints["conv"], "--out", str(out)]) == 2
    assert "--kind attributions" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------------- the report's defaults
def _colorbar_labels(fig) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if hasattr(ax, "_colorbar")]


def test_the_default_example_is_one_the_attack_fools(models):
    """runners.figures.select_example (used by the report and by `visualize`) shows a fooled example unless an
    index is given: clean-correct, and the adversarial prediction differs from the label."""
    from robustbench_lr.data import load_dataset
    from robustbench_lr.runners.figures import select_example

    m = models["lr"]
    x, y = load_dataset("mnist5k", "test").batch(torch.arange(32))
    kw = {"eps": 0.3, "norm": "linf", "steps": 10, "seed": 0, "num_classes": 10, "device": torch.device("cpu")}
    sel = select_example(m, x, y, list(range(32)), **kw)
    ex = sel.example
    assert ex.fooled and ex.adv_pred != ex.label and ex.clean_pred == ex.label
    with torch.no_grad():
        assert int(m(sel.x_ex_adv[None]).argmax()) != int(y[ex.position]) == ex.label
        assert int(m(sel.x[None]).argmax()) == ex.label
    assert float((sel.x_ex_adv - sel.x).abs().max()) <= 0.3 + 1e-6
    fixed = select_example(m, x, y, list(range(32)), index=7, **kw)
    assert fixed.example.dataset_index == 7  # --index overrides the choice


def test_visualize_defaults_are_the_reports(models):
    from dataclasses import fields

    from robustbench_lr.cli.visualize import FIGURE_STEPS, FIGURE_SUBSET
    from robustbench_lr.runners.figures import FigureConfig
    from robustbench_lr.viz.layers import figure_layer

    defaults = {f.name: f.default for f in fields(FigureConfig)}
    assert FIGURE_STEPS == defaults["steps"] and FIGURE_SUBSET == defaults["n"]
    assert figure_layer(models["lr"]) == "stages.1.0.spatial" and figure_layer(models["conv"]) is None


def test_window_coverage_of_a_small_map(models):
    geo = viz.layer_geometry(models["lr"], (1, 28, 28))
    g = geo["stages.2.1.spatial"]  # 7x7 window on a 4x4 map, stride 1
    cov = g.coverage()
    assert cov[0, 0] == pytest.approx(1 / 16) and cov[3, 3] == 1.0 and cov[0, 3] == pytest.approx(1 / 4)
    for name in ("stages.0.0.spatial", "stages.2.0.spatial"):  # brute force over every output pixel
        gg = geo[name]
        pix = [(r, c) for r in range(gg.out_grid[0]) for c in range(gg.out_grid[1])]
        brute = sum(gg.inside(p).double() for p in pix) / len(pix)
        assert torch.allclose(gg.coverage(), brute)


def test_priors_grey_out_offsets_outside_the_map(models):
    m = models["lr"]
    fig = viz.plot_geometry_priors(m, "stages.2.1.spatial")
    heat = [ax for ax in fig.axes if ax.images and ax.get_title().startswith("group")]
    mask = np.ma.getmaskarray(heat[0].images[0].get_array())
    assert mask[0, 0] and mask[6, 6] and not mask[3, 3]  # corners reached by 1 of 16 pixels: grey
    assert all("% on grey" in ax.get_title() for ax in heat)
    full = viz.plot_geometry_priors(m, "stages.0.0.spatial")  # 14x14 map: every offset mostly inside
    assert not np.ma.getmaskarray([a for a in full.axes if a.images][0].images[0].get_array()).any()
    evo = viz.plot_prior_evolution(m)
    ent = [ax for ax in evo.axes if ax.lines and not ax.images]
    assert len(ent) == len(LR_NAMES) and len({ax.get_ylim() for ax in ent}) == 1  # one y scale for all layers
    assert all(label for label in _colorbar_labels(evo))


def test_figures_fit_the_page_and_label_their_scales(models, images):
    from robustbench_lr.viz import _draw as D

    m, (x, y) = models["lr"], images
    x_adv = (x[1] + 0.1 * torch.sign(torch.randn_like(x[1]))).clamp(0, 1)
    figs = [viz.plot_pixel_weights(m, x[1], "stages.1.0.spatial"), viz.plot_weights_overlay(m, x[1]),
            viz.plot_attention_shift(m, x[1], x_adv, "stages.1.0.spatial"),
            viz.plot_attributions(m, x[1], x_adv, int(y[1]), **FAST_ATTR), viz.plot_prior_evolution(m),
            viz.plot_geometry_priors(m, "stages.1.0.spatial")]
    for fig in figs:
        w, h = fig.get_size_inches()
        assert w <= D.PAGE_WIDTH + 1e-6 and h <= D.PAGE_HEIGHT + 1e-6
        labels = _colorbar_labels(fig)
        assert labels and all(labels), labels
        bars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
        assert all(ax.yaxis.label.get_fontsize() == D.FONT for ax in bars)  # one size for colour-bar labels
    for fig in figs[2:4]:  # the perturbation panel has a scale in pixel values
        assert any("pixel value" in lab for lab in _colorbar_labels(fig))
    shift = figs[2]
    assert len([ax for ax in shift.axes if ax.images]) == 3 + 3 * 2  # images + 3 rows x 2 groups, one page


def _synthetic_run(root: Path) -> Path:

    from robustbench_lr.results import RunTables, frame, write_run

    rows = []
    for m, s in (("lr", 1.0), ("conv", 0.7)):
        rows.append({"model": m, "family": "clean", "perturbation": "clean", "attack": "clean", "eps": 0.0,
                     "param_name": "eps", "param_value": 0.0, "n_total": 100, "n_correct": 90})
        for e in (0.1, 0.2):
            rows.append({"model": m, "family": "linf", "perturbation": "pgd", "attack": "pgd", "norm": "linf",
                         "eps": e, "param_name": "eps", "param_value": e, "n_total": 100,
                         "n_correct": int(60 * s / (10 * e))})
    from robustbench_lr.results import finalize

    write_run(root, RunTables(finalize(rows), frame([], "paired"), frame([], "hygiene"), frame([], "outcomes")),
              {"command": "synthetic"})
    return root


def test_visualize_draws_the_reports_curves_from_a_run(tmp_path, capsys):
    run = _synthetic_run(tmp_path / "run")
    for kind in ("summary", "eps-curves"):
        out = tmp_path / f"{kind}.png"
        assert main(["visualize", "--run", str(run), "--kind", kind, "--out", str(out)]) == 0
        assert out.read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "k.png"
    assert main(["visualize", "--run", str(run), "--kind", "kernel-curves", "--out", str(bad)]) == 2
    assert "kernel-size" in capsys.readouterr().err and not bad.exists()
    assert main(["visualize", "--kind", "summary", "--out", str(bad)]) == 2
    assert main(["visualize", "--run", str(run), "--kind", "summary", "--norm", "l2", "--out", str(bad)]) == 2
    assert "no l2 attack" in capsys.readouterr().err and not bad.exists()


def test_visualize_takes_the_example_eps_and_layer_of_a_runs_figure(tmp_path):
    import argparse
    import json

    from robustbench_lr.cli.visualize import apply_run_defaults

    run = _synthetic_run(tmp_path / "run")
    (run / "figures").mkdir()
    (run / "figures" / "lr_shift.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    cap = ("lr (lrnet_tiny), layer stages.2.0.spatial: 7x7 window, stride 2, 16 groups; test example 5 (label 3), "
           "PGD-7 linf eps=0.2: fooled; prediction 3 at 90% clean, 5 at 60% adversarial: clean vs adversarial")
    (run / "figures" / "figures.json").write_text(json.dumps([{"file": "lr_shift.png", "title": "t", "caption": cap,
                                                                "model": "lr", "kind": "shift", "index": 5}]))
    args = argparse.Namespace(run=[str(run)], kind="shift", index=None, eps=None, steps=None, norm=None, layer=None)
    apply_run_defaults(args, "lr")
    assert (args.index, args.eps, args.steps, args.norm, args.layer) == (5, "0.2", 7, "linf", "stages.2.0.spatial")
    given = argparse.Namespace(run=[str(run)], kind="shift", index=1, eps="0.1", steps=3, norm="linf", layer="stem.3")
    apply_run_defaults(given, "lr")
    assert (given.index, given.eps, given.steps, given.layer) == (1, "0.1", 3, "stem.3")  # options win
    with pytest.raises(UserError, match="no report figures of conv"):
        apply_run_defaults(argparse.Namespace(run=[str(run)], kind="shift"), "conv")
