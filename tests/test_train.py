"""Training, checkpoints and resume on tiny settings (a few seconds each)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from robustbench_lr.checkpoint import load_model, read_meta
from robustbench_lr.training import TrainConfig, apply_augment, augment_table, fit

TINY = dict(model="resnet_tiny", epochs=1, batch_size=32, train_limit=256, model_kwargs={"width": 0.25}, device="cpu")


def _cfg(**kw) -> TrainConfig:
    d = {**TINY, **kw}
    return TrainConfig(**d)


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_training_writes_a_self_describing_checkpoint(tmp_path):
    meta = fit(_cfg(epochs=2), tmp_path / "run", progress=False, command="robustbench-lr train ...")
    out = tmp_path / "run"
    assert (out / "model.safetensors").is_file() and (out / "model.json").is_file()
    assert not (out / "last.pt").exists()
    on_disk = json.loads((out / "model.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    assert on_disk["model"]["name"] == "resnet_tiny" and on_disk["model"]["kwargs"]["width"] == 0.25
    assert on_disk["dataset"]["name"] == "mnist5k" and on_disk["dataset"]["split_seed"] == 0
    assert on_disk["training"]["config"]["epochs"] == 2 and on_disk["training"]["command"]
    assert set(on_disk["versions"]) >= {"torch", "robustbench_lr", "python"}
    assert "git_commit" in on_disk and len(on_disk["weights_sha256"]) == 64
    prov = on_disk["provenance"]  # what reproduces bit for bit, stated with the thread count it depends on
    assert prov["torch_threads"] == torch.get_num_threads() and "threads" in prov["reproducibility"]
    m = on_disk["metrics"]
    assert m["test_total"] == 1000 and 0 <= m["test_correct"] <= 1000 and len(m["history"]) == 2
    # the reloaded model reproduces the stored held-out accuracy
    from robustbench_lr.data import load_dataset
    from robustbench_lr.training import evaluate

    model = load_model(out)
    correct, total = evaluate(model, load_dataset("mnist5k", "test"), 500, torch.device("cpu"))
    assert (correct, total) == (m["test_correct"], m["test_total"])


def test_same_command_and_seed_give_identical_weights(tmp_path):
    fit(_cfg(), tmp_path / "a", progress=False)
    fit(_cfg(), tmp_path / "b", progress=False)
    fit(_cfg(seed=1), tmp_path / "c", progress=False)
    a, b, c = _state(tmp_path / "a"), _state(tmp_path / "b"), _state(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_redoes_only_the_unfinished_epochs_and_matches_an_uninterrupted_run(tmp_path):
    cfg = _cfg(epochs=3)
    fit(cfg, tmp_path / "full", progress=False)
    stopped = fit(cfg, tmp_path / "cut", progress=False, stop_after=2)
    assert stopped == {"stopped_after_epoch": 2}
    assert (tmp_path / "cut" / "last.pt").is_file() and not (tmp_path / "cut" / "model.json").exists()
    meta = fit(cfg, tmp_path / "cut", resume=True, progress=False)
    assert meta["metrics"]["epochs_run_this_call"] == 1
    a, b = _state(tmp_path / "full"), _state(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unfinished_run_needs_resume_and_settings_must_match(tmp_path):
    fit(_cfg(epochs=2), tmp_path / "r", progress=False, stop_after=1)
    with pytest.raises(ValueError, match="--resume"):
        fit(_cfg(epochs=2), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="different settings.*lr"):
        fit(_cfg(epochs=2, lr=0.05), tmp_path / "r", resume=True, progress=False)


def test_finished_run_is_reused_with_resume(tmp_path, caplog):
    first = fit(_cfg(), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="already holds a finished model"):
        fit(_cfg(), tmp_path / "r", progress=False)
    with caplog.at_level(logging.INFO):
        again = fit(_cfg(), tmp_path / "r", resume=True, progress=False)
    assert again["weights_sha256"] == first["weights_sha256"] and "already trained" in caplog.text


def test_default_and_explicit_kernel_size_are_the_same_run(tmp_path):
    first = fit(_cfg(), tmp_path / "r", progress=False)  # resnet_tiny's default k = 3
    again = fit(_cfg(kernel_size=3), tmp_path / "r", resume=True, progress=False)
    assert again["weights_sha256"] == first["weights_sha256"]
    with pytest.raises(ValueError, match="different configuration"):
        fit(_cfg(kernel_size=5), tmp_path / "r", resume=True, progress=False)


@pytest.mark.parametrize("kw,needle", [
    (dict(epochs=0), "--epochs"),
    (dict(dataset="svhn"), "dataset"),
    (dict(batch_size=300), "larger than the 256 training examples"),
    (dict(dataset="cifar10"), "needs --data-root"),
    (dict(model="lrnet_tinny"), "lrnet_tiny"),
])
def test_bad_input_is_refused_before_any_output(tmp_path, kw, needle):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=needle):
        fit(_cfg(**kw), out, progress=False)
    assert not out.exists()


def test_corrupt_weights_are_refused(tmp_path):
    fit(_cfg(), tmp_path / "r", progress=False)
    w = tmp_path / "r" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x40  # one bit of the last tensor's bytes: still a valid file, other weights
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_model(tmp_path / "r")
    assert load_model(tmp_path / "r", check_hash=False) is not None
    w.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_model(tmp_path / "r")


def test_json_and_weights_mismatch_names_the_tensor(tmp_path):
    fit(_cfg(), tmp_path / "r", progress=False)
    meta_path = tmp_path / "r" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["kwargs"]["kernel_size"] = 5
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"shape .* expects"):
        load_model(tmp_path / "r")


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "nothing")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "model.json").write_text("{not json")
    (tmp_path / "d" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_meta(tmp_path / "d")


def test_augmentation_translates_per_example_and_is_a_function_of_seed_and_epoch():
    t0, t0b, t1 = augment_table("mnist5k", 8, 0, 0), augment_table("mnist5k", 8, 0, 0), augment_table("mnist5k", 8, 0, 1)
    assert all((t0[k] == t0b[k]).all() for k in t0) and not (t0["dy"] == t1["dy"]).all()
    assert not t0["flip"].any()  # digits are never flipped
    x = torch.zeros(2, 1, 6, 6)
    x[:, :, 2, 3] = 1.0
    table = {"pad": t0["pad"], "dy": t0["dy"].copy(), "dx": t0["dx"].copy(), "flip": t0["flip"]}
    table["dy"][:2], table["dx"][:2] = [2, 0], [2, 4]  # pad 2: example 0 unshifted; example 1 moves down 2, left 2
    y = apply_augment(x, torch.tensor([0, 1]), table)
    assert torch.equal(y[0], x[0])
    assert y[1, 0, 4, 1] == 1.0 and y[1].sum() == 1.0


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    from robustbench_lr.utils import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left behind
