"""The report's model figures (runners.figures) and `visualize` (issue 14): one example for every model where the
attack fools one for all, the settings of each figure in its record, and an unfooled example said so in the title
of the figure drawn alone.

Uses the session checkpoints of conftest.py (resnet_tiny and lrnet_tiny on mnist5k).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest
import torch

from robustbench_lr.runners.figures import (Attacked, FigureConfig, figure_items, informative_eps, shared_positions)

pytest.importorskip("matplotlib")
pytest.importorskip("captum")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models and captum run fastest on one thread on a shared 2-core machine (see tests/test_viz.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _attacked(clean: list[int], adv: list[int], classes: int = 3) -> Attacked:
    """Predictions as one-hot probabilities (clean and adversarial) of a batch."""
    eye = torch.eye(classes)
    return Attacked(torch.zeros(len(clean), 1, 2, 2), eye[clean], eye[adv])


def test_the_example_is_the_first_one_fooled_for_every_model():
    y = torch.tensor([0, 1, 2, 0])
    a = _attacked([0, 1, 2, 0], [1, 1, 0, 2])  # fools 0, 2, 3
    b = _attacked([0, 1, 2, 0], [0, 0, 0, 1])  # fools 1, 2, 3
    assert shared_positions([a, b], y) == ([2, 2], True)  # not 0 (a's first) nor 1 (b's first)
    c = _attacked([1, 1, 2, 0], [1, 1, 2, 1])  # fools only 3 (0 is clean-wrong)
    assert shared_positions([a, b, c], y) == ([3, 3, 3], True)


def test_without_a_common_fooled_example_each_model_shows_its_own():
    y = torch.tensor([0, 1, 2])
    a = _attacked([0, 1, 2], [1, 1, 2])  # fools only 0
    b = _attacked([0, 1, 2], [0, 0, 2])  # fools only 1
    assert shared_positions([a, b], y) == ([0, 1], False)
    assert shared_positions([a, b], y, pos=2) == ([2, 2], True)  # a forced index wins


def test_informative_eps_is_where_the_models_differ_most():
    r = pd.DataFrame({"attack": ["pgd"] * 4 + ["fgsm"] * 2, "eps": [0.1, 0.1, 0.2, 0.2, 0.3, 0.3],
                      "accuracy": [0.9, 0.8, 0.7, 0.2, 0.9, 0.0]})
    assert informative_eps(r, [0.0, 0.1, 0.2, 0.3]) == 0.2  # PGD only; fgsm's larger spread is not used
    assert informative_eps(r.iloc[:0], [0.0, 0.1, 0.2, 0.3]) == 0.2  # no results: the middle eps
    with pytest.raises(ValueError):
        informative_eps(r, [0.0])


def test_figure_records_share_the_example_and_carry_their_settings(tiny_checkpoints, tmp_path):
    from robustbench_lr.results.rundir import FIGURES_DIR, FIGURES_JSON, write_figures

    cfg = FigureConfig(checkpoints=(tiny_checkpoints["lr"], tiny_checkpoints["conv"]), eps=0.3, steps=5, seed=3,
                       n=32, device="cpu")
    rows = list(figure_items(cfg))
    items = [r.values for r in rows if r.table == "figure"]
    drift = [r.values for r in rows if r.table == "results"]
    assert {i["model"] for i in items} == {"lr", "conv"}
    shown = [i for i in items if i["kind"] in ("weights", "overlay", "shift", "attributions")]
    assert len({i["index"] for i in shown}) == 1 and all(i["fooled"] and i["shared_example"] for i in shown)
    assert all("same example for every model" in i["caption"] for i in shown)
    for i in items:
        assert (i["attack"], i["norm"], i["eps"], i["steps"], i["seed"]) == ("pgd", "linf", 0.3, 5, 3)
    assert {i["layer"] for i in items if i["model"] == "lr"} == {"stages.1.0.spatial"}
    assert {i["layer"] for i in items if i["model"] == "conv"} == {None}
    assert drift and all(d["norm"] == "linf" and d["steps"] == 5 for d in drift)
    write_figures(tmp_path, items, dpi=40)
    saved = json.loads((tmp_path / FIGURES_DIR / FIGURES_JSON).read_text())
    assert all({"eps", "steps", "norm", "seed", "layer", "index"} <= set(s) for s in saved)


def test_visualize_reads_the_records_fields_before_the_caption(tmp_path):
    from robustbench_lr.cli.visualize import apply_run_defaults
    from robustbench_lr.results import RunTables, finalize, frame, write_run

    rows = [{"model": "lr", "family": "clean", "perturbation": "clean", "attack": "clean", "eps": 0.0,
             "param_name": "eps", "param_value": 0.0, "n_total": 10, "n_correct": 9}]
    write_run(tmp_path, RunTables(finalize(rows), frame([], "paired"), frame([], "hygiene"), frame([], "outcomes")),
              {"command": "synthetic"})
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "lr_shift.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    record = {"file": "lr_shift.png", "title": "t", "model": "lr", "kind": "shift", "index": 5, "eps": 0.05,
              "steps": 9, "norm": "l2", "seed": 4, "layer": "stem.3",
              "caption": "lr, layer stages.2.0.spatial: x; PGD-7 linf eps=0.2: fooled"}  # stale caption: ignored
    (tmp_path / "figures" / "figures.json").write_text(json.dumps([record]))
    args = argparse.Namespace(run=[str(tmp_path)], kind="shift", index=None, eps=None, steps=None, norm=None,
                              layer=None, seed=None)
    apply_run_defaults(args, "lr")
    assert (args.index, args.eps, args.steps, args.norm, args.layer, args.seed) == (5, "0.05", 9, "l2", "stem.3", 4)


def test_an_unfooled_example_says_so_in_the_title_of_the_figure_alone(tiny_checkpoints, tmp_path):
    """--index forces an example; at a tiny eps the attack cannot fool it, and the figure written alone (not only
    the report's heading) says 'NOT fooled' in its title."""
    from robustbench_lr.cli import build_parser, main
    from robustbench_lr.cli.visualize import _model_figure

    for kind in ("shift", "attributions"):
        out = tmp_path / f"{kind}.png"
        argv = ["visualize", "--checkpoint", tiny_checkpoints["lr"], "--kind", kind, "--index", "0", "--eps",
                "0.001", "--steps", "1", "--out", str(out)]
        if kind == "attributions":
            argv += ["--methods", "Saliency"]
        fig, _ = _model_figure(build_parser().parse_args(argv))
        title = fig._suptitle.get_text()
        assert "NOT fooled" in title and "test example 0" in title, title
        assert main(argv) == 0 and out.read_bytes()[:4] == b"\x89PNG"
