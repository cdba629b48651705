"""Official AutoAttack (pyautoattack) and adv-lib's minimal-norm attacks, on a small CNN trained in a few seconds."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lr.attacks import minimal_norm as mn
from robustbench_lr.attacks import prepare_for_attack
from robustbench_lr.attacks.autoattack_ref import _captured, check_rows, run_official_autoattack
from robustbench_lr.attacks.registry import AttackSpec, build_attack, run_minimal_norm
from robustbench_lr.attacks.threat import ThreatModelViolation, check_adversarial, distances
from robustbench_lr.data import load_dataset
from robustbench_lr.errors import UserError
from robustbench_lr.results.store import FileStore, MemoryStore

CPU = torch.device("cpu")


class TinyCNN(nn.Module):
    """Two strided convs and a linear layer; normalises inside (takes [0, 1] pixels)."""

    def __init__(self, n_out: int = 10) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 5, stride=2), nn.Conv2d(8, 16, 5, stride=2)
        self.fc = nn.Linear(16 * 4 * 4, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1((x - 0.13) / 0.31))
        return self.fc(F.relu(self.c2(x)).flatten(1))


class Wrap(nn.Module):
    """A model followed by `post` (softmax, noise, ...) or raising after `kill_after` forward calls."""

    def __init__(self, inner: nn.Module, post=None, kill_after: int | None = None) -> None:
        super().__init__()
        self.inner, self.post, self.kill_after, self.calls = inner, post, kill_after, 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.kill_after is not None and self.calls > self.kill_after:
            raise KeyboardInterrupt("simulated kill")
        out = self.inner(z)
        return out if self.post is None else self.post(out)


@pytest.fixture(scope="module")
def tiny():
    """A TinyCNN trained 300 Adam steps on mnist5k (about 3 s, ~95% test accuracy) and 24 fixed test images."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    tr, te = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(300):
        xb, yb = tr.batch(torch.randint(0, len(tr), (64,), generator=g))
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = te.batch(torch.as_tensor(np.random.default_rng(0).permutation(len(te))[:24]))
    return prepare_for_attack(model), x, y


def _pgd_robust(model, x, y, norm, eps, steps=20):
    adv = build_attack(AttackSpec("pgd", norm=norm, steps=steps), model, eps, 10, 0, batch_size=len(x))(
        x, y, None, torch.arange(len(x)))
    check_adversarial(x, adv, norm, eps)
    with torch.no_grad():
        return (model(adv).argmax(1) == y).numpy()


# ------------------------------------------------------------------------------------------- official AutoAttack


def test_official_autoattack_is_at_least_as_strong_as_pgd20(tiny, capsys, caplog):
    model, x, y = tiny
    x, y = x[:16], y[:16]
    fn = build_attack(AttackSpec("autoattack"), model, 0.1, 10, 0, batch_size=16)
    assert fn.whole_set
    with caplog.at_level(logging.INFO):
        adv = fn(x, y)
    assert capsys.readouterr().out == "" and not [r for r in caplog.records if r.name == "auto-attack"]
    res = fn.result
    apgd = res.per_attack[0]
    assert apgd["attack"] == "apgd-ce" and apgd["grad_evals"] == 101 * apgd["n_attacked"]  # 1 + 100 iterations
    check_adversarial(x, adv, "linf", 0.1)
    with torch.no_grad():
        robust = (model(adv).argmax(1) == y).numpy()
    assert np.array_equal(robust, res.robust)  # AutoAttack's flags agree with a plain forward
    assert res.robust.sum() <= _pgd_robust(model, x, y, "linf", 0.1).sum()
    assert res.attacks[0] == "apgd-ce" and res.settings["version"] == "standard" and res.settings["targets"] == 9
    assert not (res.robust & ~res.clean_correct).any()
    assert [f for f, r, c in zip(res.fooled_by, res.robust, res.clean_correct) if not r and c] and \
        all(f in ("apgd-ce", "apgd-t", "fab-t", "square") for f, r, c in zip(res.fooled_by, res.robust,
                                                                              res.clean_correct) if not r and c)
    assert fn.grad_evals == res.grad_evals > 0 and fn.forwards > 0
    by = {f["check"]: f["status"] for f in fn.flags}
    assert set(by) >= {"randomized", "softmax_output", "too_few_classes", "zero_gradients",
                       "square_beats_white_box", "dynamic_defense", "recheck"}
    assert by["randomized"] == by["softmax_output"] == by["recheck"] == "pass"
    s = AttackSpec("autoattack", aa_version="plus").settings(0.1)
    assert s["aa_version"] == "plus" and s["implementation"].startswith("autoattack (official, pyautoattack")


@pytest.mark.slow
def test_wrapper_reproduces_one_uninterrupted_autoattack_run(tiny):
    from pyautoattack import AutoAttack

    model, x, y = tiny
    res = run_official_autoattack(model, x, y, norm="linf", eps=0.1, batch_size=8)
    aa = AutoAttack(model, norm="Linf", eps=0.1, seed=0, version="standard")
    with _captured():  # keeps AutoAttack's log lines off the test output
        x_ref, y_ref = aa.run_standard_evaluation(x, y, batch_size=8)
    assert np.array_equal(res.robust, (y_ref == y).numpy())
    assert torch.equal(res.x_adv, x_ref)


def test_a_killed_run_resumes_to_the_same_flags(tiny, tmp_path):
    """The state goes through a store's slot (here a run directory's: JSON + safetensors shards)."""
    model, x, y = tiny
    x, y = x[:16], y[:16]
    kw = {"norm": "linf", "eps": 0.08, "batch_size": 4, "attacks": ("apgd-ce", "apgd-t")}
    spy = prepare_for_attack(Wrap(model))
    ref = run_official_autoattack(spy, x, y, **kw)
    assert 0 < ref.robust.sum() < ref.clean_correct.sum()  # both attacks have work to do
    state = FileStore(tmp_path).slot("aa")
    with pytest.raises(KeyboardInterrupt):
        killed = prepare_for_attack(Wrap(model, kill_after=int(spy.calls * 0.7)))
        run_official_autoattack(killed, x, y, state=state, **kw)
    saved = state.read()
    assert saved["done"] == ["apgd-ce"] and saved["current"] == "apgd-t" and not saved["finished"]
    assert not all(saved["robust"][i] for i in np.flatnonzero(ref.clean_correct))  # points fooled before the kill
    # the store's files: the document and the shards of the examples found so far
    assert json.loads((tmp_path / "aa.json").read_text())["shards"] == saved["shards"] > 0
    assert len(list((tmp_path / "aa.json.adv").glob("shard-*.safetensors"))) == saved["shards"]
    res = run_official_autoattack(model, x, y, state=state, **kw)
    assert res.resumed and np.array_equal(res.robust, ref.robust) and res.fooled_by == ref.fooled_by
    assert torch.equal(res.x_adv, ref.x_adv)  # also the examples found before the kill (restored from the state)
    with pytest.raises(UserError, match="different AutoAttack run"):
        run_official_autoattack(model, x, y, state=state, **{**kw, "eps": 0.1})


def test_pyautoattack_0_2_0_cannot_restore_its_own_state(tmp_path):
    """Why the wrapper keeps its own state: pyautoattack 0.2.0 writes the attack set with json's default=str."""
    from pyautoattack.state import EvaluationState

    st = EvaluationState({"apgd-ce", "square"}, path=tmp_path / "s.json")
    st.robust_flags = torch.tensor([True, False])
    back = EvaluationState.from_disk(tmp_path / "s.json")
    assert back.attacks_to_run != {"apgd-ce", "square"}  # a str: run_standard_evaluation refuses to resume


def test_autoattack_checks_become_rows():
    from pyautoattack import checks

    aa_log = logging.getLogger("auto-attack")
    x, y = torch.rand(6, 1, 4, 4), torch.zeros(6, dtype=torch.long)
    with _captured() as cap:
        checks.check_randomized(lambda z: torch.randn(len(z), 4), x, y, logger=aa_log)
        checks.check_range_output(lambda z: torch.full((len(z), 4), 0.25), x, logger=aa_log)
        checks.check_zero_gradients(torch.zeros(3, 8), logger=aa_log)
        checks.check_square_sr({"clean": 0.9, "apgd-ce": 0.5, "square": 0.4}, logger=aa_log)
        checks.check_n_classes(3, ["apgd-t"], 9, 9, logger=aa_log)
    rows = {r["check"]: r for r in check_rows(cap.messages)}
    assert rows["randomized"]["status"] == rows["softmax_output"]["status"] == "fail"
    assert rows["too_few_classes"]["status"] == "fail" and "3 classes" in rows["too_few_classes"]["detail"]
    assert rows["zero_gradients"]["status"] == rows["square_beats_white_box"]["status"] == "warn"
    assert "3 points with zero gradient" in rows["zero_gradients"]["detail"]
    assert rows["dynamic_defense"]["status"] == "pass" and "other" not in rows
    assert check_rows(["something new"])[-1] == {"check": "other", "status": "warn", "detail": "something new"}


def test_probability_outputs_are_refused_as_a_flag_row(tiny, tmp_path):
    model, x, y = tiny
    res = run_official_autoattack(prepare_for_attack(Wrap(model, post=lambda o: o.softmax(1))), x[:8], y[:8],
                                  norm="linf", eps=0.1, state=FileStore(tmp_path).slot("s"))
    assert res.refused and np.isnan(res.robust_accuracy) and res.per_attack == [] and res.grad_evals == 0
    assert {r["check"]: r["status"] for r in res.flags}["softmax_output"] == "fail"
    assert not list(tmp_path.iterdir())  # refused before any state was saved


def test_a_randomised_model_is_flagged(tiny):
    model, x, y = tiny
    noisy = prepare_for_attack(Wrap(model, post=lambda o: o + 0.5 * torch.randn_like(o)))
    res = run_official_autoattack(noisy, x[:8], y[:8], norm="linf", eps=0.05, attacks=("apgd-ce",))
    assert {r["check"]: r["status"] for r in res.flags}["randomized"] == "fail"


@pytest.mark.parametrize("n_cls", [2, 3])
def test_fewer_than_four_classes_error_or_documented_fallback(n_cls):
    torch.manual_seed(1)
    model = prepare_for_attack(TinyCNN(n_out=n_cls))
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point correct: the attacks have work to do
    with pytest.raises(UserError, match="--aa-few-classes fallback") as err:
        run_official_autoattack(model, x, y, norm="linf", eps=0.3)
    assert "aa_few_classes='fallback'" in str(err.value) and "apgd-ce, fab-t, square" in str(err.value)
    res = run_official_autoattack(model, x, y, norm="linf", eps=0.3, few_classes="fallback")
    assert res.settings["attacks"] == ["apgd-ce", "fab-t", "square"] and res.settings["targets"] == n_cls - 1
    row = {r["check"]: r for r in res.flags}["too_few_classes"]
    assert row["status"] == "warn" and "apgd-t" in row["detail"]
    check_adversarial(x, res.x_adv, "linf", 0.3)


def test_the_attack_spec_carries_the_few_classes_fallback_to_autoattack():
    """`--aa-few-classes` / `aa_few_classes` reach run_official_autoattack through build_attack (AutoAttackFn)."""
    torch.manual_seed(1)
    model = prepare_for_attack(TinyCNN(n_out=3))
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(UserError, match="--aa-few-classes fallback"):
        build_attack(AttackSpec("autoattack"), model, 0.3, 3, 0, batch_size=6)(x, y)
    fn = build_attack(AttackSpec("autoattack", aa_few_classes="fallback", aa_attacks=("apgd-ce", "apgd-t")), model,
                      0.3, 3, 0, batch_size=6)
    fn(x, y)
    assert fn.result.settings["attacks"] == ["apgd-ce"]
    assert {r["check"]: r["status"] for r in fn.flags}["too_few_classes"] == "warn"


def test_autoattack_subset_runs_only_those_attacks_and_says_so(tiny):
    model, x, y = tiny
    spec = AttackSpec("autoattack", aa_attacks=("apgd-t", "apgd-ce"))
    assert spec.aa_attacks == ("apgd-ce", "apgd-t")  # the version's order, whatever the user's
    s = spec.settings(0.1)
    assert s["aa_version"] == "standard[apgd-ce+apgd-t]" and s["protocol"].startswith("SUBSET of standard")
    fn = build_attack(spec, model, 0.1, 10, 0, batch_size=16)
    fn(x[:12], y[:12])
    assert set(fn.result.attacks) <= {"apgd-ce", "apgd-t"} and fn.result.attacks[0] == "apgd-ce"
    assert AttackSpec("autoattack", aa_attacks=("apgd-ce", "apgd-t", "fab-t", "square")).aa_attacks is None
    with pytest.raises(UserError, match="Did you mean 'apgd-t'"):
        AttackSpec("autoattack", aa_attacks=("apgd-tt",))
    with pytest.raises(UserError, match="--attack autoattack only"):
        AttackSpec("pgd", aa_attacks=("apgd-ce",))


def test_autoattack_spec_and_build_errors():
    with pytest.raises(UserError, match="Did you mean 'plus'"):
        AttackSpec("autoattack", aa_version="plsu")
    with pytest.raises(UserError, match="version"):
        run_official_autoattack(TinyCNN().eval(), torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long),
                                norm="linf", eps=0.1, version="custom")
    with pytest.raises(UserError, match="resumable state"):
        build_attack(AttackSpec("pgd"), TinyCNN().eval(), 0.1, 10, 0, state=MemoryStore().slot("x"))
    with pytest.raises(UserError, match="Did you mean 'fallback'"):
        AttackSpec("autoattack", aa_few_classes="fallbak")


# ------------------------------------------------------------------------------------------- minimal-norm attacks


def test_fmn_norms_give_a_monotone_curve_close_to_pgd(tiny):
    model, x, y = tiny
    res = run_minimal_norm(AttackSpec("fmn", norm="linf", steps=300), model, x, y, batch_size=12)
    assert res.norms.dtype == np.float64 and res.norms.shape == (len(x),) and res.grad_evals > 0
    found = np.isfinite(res.norms) & (res.norms > 0)
    assert found.sum() >= res.clean_correct.sum() - 2
    assert np.all(res.norms[~res.clean_correct] == 0)
    # the norms are ours: float64 distances of the returned x_adv, which a plain forward misclassifies
    d = distances(x, res.x_adv, "linf").numpy()
    assert np.array_equal(d[found], res.norms[found])
    with torch.no_grad():
        assert (model(res.x_adv[found]).argmax(1) != y[found]).all()
    grid = [0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3]
    curve = res.robust_accuracy(grid)
    assert np.all(np.diff(curve) <= 0) and curve[0] == res.clean_correct.mean()
    for e, acc in zip(grid, curve):
        if e in (0.05, 0.1, 0.15):
            # FMN looks for the smallest perturbation, PGD-20 for any within eps: at a fixed eps FMN may miss a
            # point PGD finds. Margin: 2 of the 24 points (8.3 points of accuracy).
            assert acc <= _pgd_robust(model, x, y, "linf", e).mean() + 2 / len(x) + 1e-12


@pytest.mark.parametrize("attack", ["ddn", "alma", "fmn"])
def test_l2_minimal_norms_are_verified_and_consistent(tiny, attack):
    model, x, y = tiny
    res = mn.minimal_perturbation(model, x[:12], y[:12], attack=attack, norm="l2", steps=100, batch_size=12)
    found = np.isfinite(res.norms) & (res.norms > 0)
    assert found.any() and res.settings["implementation"].startswith("adv-lib")
    assert np.allclose(distances(x[:12], res.x_adv, "l2").numpy()[found], res.norms[found], rtol=0, atol=0)
    assert torch.equal(res.x_adv[~found], x[:12][~found])  # clean image where nothing was found
    if attack == "ddn":  # DDN finds every point here; robust at eps = 0 is the clean accuracy
        assert found.sum() == res.clean_correct.sum()


def test_minimal_norm_refusals_and_verification(tiny, monkeypatch):
    model, x, y = tiny
    for attack, norm in (("ddn", "linf"), ("alma", "linf")):
        with pytest.raises(UserError, match="l2 only"):
            mn.minimal_perturbation(model, x, y, attack=attack, norm=norm)
    with pytest.raises(UserError, match="norm"):
        mn.minimal_perturbation(model, x, y, attack="fmn", norm="l1")
    with pytest.raises(UserError, match="Did you mean 'fmn'"):
        mn.minimal_perturbation(model, x, y, attack="fnm", norm="l2")
    with pytest.raises(UserError, match="minimal-norm"):
        build_attack(AttackSpec("fmn"), model, 0.1, 10, 0)
    assert AttackSpec("ddn", norm="l2").steps == mn.DEFAULT_STEPS["ddn"] == 1000 and AttackSpec("fmn").minimal_norm
    with pytest.raises(UserError, match="3 classes"):
        mn.minimal_perturbation(prepare_for_attack(TinyCNN(n_out=2)), x[:2], torch.zeros(2, dtype=torch.long),
                                attack="alma", norm="l2", steps=2)
    # a returned point the plain model still classifies correctly does not count: +inf, not its norm
    monkeypatch.setattr(mn, "_adv_lib_call", lambda attack, m, xb, yb, kw: (xb + 0.001).clamp(0, 1))
    res = mn.minimal_perturbation(model, x, y, attack="fmn", norm="linf", steps=1)
    assert np.all(np.isinf(res.norms[res.clean_correct])) and torch.equal(res.x_adv, x)
    # pixels outside [0, 1] are a violation, never clipped
    monkeypatch.setattr(mn, "_adv_lib_call", lambda attack, m, xb, yb, kw: xb + 2.0)
    with pytest.raises(ThreatModelViolation, match=r"\[0, 1\]"):
        mn.minimal_perturbation(model, x, y, attack="fmn", norm="linf", steps=1)
