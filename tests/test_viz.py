"""robustbench_lr.viz and `robustbench-lr visualize`: figures, grid geometry, attention drift, attributions.

Uses the session checkpoints of conftest.py (resnet_tiny and lrnet_tiny on mnist5k). Set RBLR_VIZ_DIR to a
folder to keep the PNGs these tests render (to look at them).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

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
