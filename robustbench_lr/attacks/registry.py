"""Attacks by name: what each one is, which library implements it, and how it is built.

Status: wiring only. The attacks are torchattacks', official AutoAttack's (pyautoattack), adv-lib's and our
StreamingPGD; `AttackSpec.settings` records which one ran (`implementation`, with the installed version).

| name               | norms    | implementation and what                                                          |
|--------------------|----------|----------------------------------------------------------------------------------|
| fgsm               | linf     | torchattacks FGSM (Goodfellow et al. 2015)                                       |
| pgd                | linf, l2 | StreamingPGD (Madry et al. 2018): step 2.5*eps/steps, random start, early stop   |
| pgd-random-target  | linf, l2 | targeted StreamingPGD towards a random wrong class (fixed per example by --seed) |
| pgd-least-likely   | linf, l2 | targeted StreamingPGD towards the clean least-likely class                       |
| apgd               | linf, l2 | torchattacks APGD-CE (Croce & Hein 2020)                                         |
| apgd-t             | linf, l2 | torchattacks APGD-T, targeted DLR over the top-9 classes                         |
| square             | linf, l2 | torchattacks Square attack (black-box, 5000 queries)                             |
| autoattack         | linf, l2 | REFERENCE: official AutoAttack (pyautoattack), aa_version standard/plus/rand     |
| autoattack-ta      | linf, l2 | NOT the reference: AutoAttack's four attacks chained from torchattacks (below)   |
| fmn                | linf, l2 | adv-lib FMN, minimal norm (Pintor et al. 2021): per-example norms, no eps        |
| ddn                | l2       | adv-lib DDN, minimal norm (Rony et al. 2019)                                     |
| alma               | l2       | adv-lib ALMA, minimal norm (Rony et al. 2021)                                    |

The three PGD variants run `attacks.pgd.StreamingPGD` (torchattacks' update rule, per-example early stopping,
fixed-size refilled batches, random starts per (example, eps, restart)); with `early_stop=False` they run
torchattacks' PGD / PGDL2 itself, which returns the last iterate. `mask='background'|'foreground'` restricts
StreamingPGD to a region of the clean image (`attacks.masks`); the torchattacks path refuses a mask.

`autoattack` runs the official code on a whole set of points at once (its AttackFn has `whole_set = True`:
the eps sweep must pass every still-robust point in one call) and exposes AutoAttack's own checks as rows
(`attack_fn.flags`). `autoattack-ta` is kept for comparison only: torchattacks' APGD-CE (100 steps, 1 restart),
APGD-T (100 steps, 9 targets), FAB-T (100 steps, 9 targets) and Square (5000 queries, p_init 0.8) in a
MultiAttack, which attacks only the points still robust. It is not the official implementation and its numbers
are not AutoAttack numbers (torchattacks' own `AutoAttack` uses 10 steps and n_classes - 1 targets,
anchors.md §2-3).

`build_attack` returns the callables of `attacks.attack_fn` (AttackFn, AutoAttackFn).

`fmn`, `ddn` and `alma` have no eps: `run_minimal_norm(spec, ...)` (`attacks.minimal_norm`) returns each
example's smallest adversarial perturbation, from which the whole eps curve follows (robust at eps iff
norm > eps); `build_attack` refuses them.

A targeted attack counts a point as fooled when the prediction is wrong (any class), as robust accuracy
requires; the cell also records how many predictions hit the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from importlib.metadata import version as dist_version
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..errors import UserError, check_choice
from .attack_fn import AttackFn, AutoAttackFn
from .masks import check_region
from .minimal_norm import DEFAULT_STEPS, MIN_NORM_NORMS, MinNormResult, adv_lib_settings, minimal_perturbation
from .threat import NORMS, check_norm

if TYPE_CHECKING:
    from ..results.store import StateSlot

ATTACK_NORMS: dict[str, tuple[str, ...]] = {
    "fgsm": ("linf",),
    "pgd": NORMS,
    "pgd-random-target": NORMS,
    "pgd-least-likely": NORMS,
    "apgd": NORMS,
    "apgd-t": NORMS,
    "square": NORMS,
    "autoattack": NORMS,
    "autoattack-ta": NORMS,
    **MIN_NORM_NORMS,
}
ATTACKS = tuple(ATTACK_NORMS)
MIN_NORM_ATTACKS = tuple(MIN_NORM_NORMS)
EPS_ATTACKS = tuple(a for a in ATTACKS if a not in MIN_NORM_NORMS)  # the ones `build_attack` builds at an eps
AA_STEPS, AA_TARGETS, AA_QUERIES = 100, 9, 5000
AA_VERSIONS = ("standard", "plus", "rand")
AA_FEW_CLASSES = ("error", "fallback")
_AA_PROTOCOL = {
    "standard": f"standard: apgd-ce({AA_STEPS}), apgd-t({AA_STEPS}, {AA_TARGETS} targets), "
                f"fab-t({AA_STEPS}, {AA_TARGETS} targets), square({AA_QUERIES})",
    "plus": f"plus: apgd-ce({AA_STEPS}, 5 restarts), apgd-dlr({AA_STEPS}, 5 restarts), fab({AA_STEPS}, 5 restarts), "
            f"square({AA_QUERIES}), apgd-t({AA_STEPS}, {AA_TARGETS} targets), fab-t({AA_STEPS}, {AA_TARGETS} targets)",
    "rand": f"rand: apgd-ce({AA_STEPS}, eot 20), apgd-dlr({AA_STEPS}, eot 20)",
}
_DEFAULT_STEPS = 20  # PGD / APGD; minimal-norm attacks default to minimal_norm.DEFAULT_STEPS


@cache
def implementation(name: str, early_stop: bool = True) -> str:
    """The library (and its installed version) that runs attack `name`, as recorded in results rows."""
    if name == "autoattack":
        return f"autoattack (official, pyautoattack {dist_version('pyautoattack')})"
    if name in MIN_NORM_NORMS:
        return f"adv-lib {dist_version('adv-lib')}"
    if name.startswith("pgd") and early_stop:
        return f"robustbench-lr StreamingPGD {dist_version('robustbench-lr')}"
    return f"torchattacks {dist_version('torchattacks')}"


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration; `settings(eps)` is what goes into a results row.

    Attributes:
        name: a key of ATTACK_NORMS.
        norm: 'linf' or 'l2'.
        steps: iterations of iterative attacks (PGD, APGD: default 20; fmn / ddn / alma: default 1000, AttackBench's,
            where adv-lib's own defaults are FMN 10, DDN 100, ALMA 1000); fixed to the reference 100 for
            autoattack / autoattack-ta. An evaluation sets the two kinds separately (EvalConfig.steps and
            .min_norm_steps, CLI --steps and --min-norm-steps).
        restarts: random restarts (PGD: independent runs, a point is fooled if any run fools it; APGD: n_restarts).
        step_size: PGD step as a multiple of eps / steps (default 2.5, Madry et al.).
        random_start: PGD starts from a uniform point in the eps-ball.
        queries: Square attack's query budget.
        early_stop: PGD stops iterating an example once it is fooled (StreamingPGD); False runs torchattacks' PGD.
        aa_version: official AutoAttack's version: 'standard', 'plus' or 'rand' (autoattack only).
        aa_attacks: a subset of that version's attacks (e.g. ('apgd-ce', 'apgd-t')), run in the version's order with
            its parameters; the rows then say 'standard[apgd-ce+apgd-t]', never plain AutoAttack. None: all of them.
        aa_few_classes: a model with fewer than 4 classes: 'error' (default: UserError before any attack) or
            'fallback' (the version without the attacks whose DLR loss needs more classes, e.g. standard becomes
            APGD-CE, FAB-T, Square; the hygiene row 'autoattack:too_few_classes' warns and says which).
        mask: None, 'background' or 'foreground': StreamingPGD perturbs only those pixels (PGD variants only).
        mask_threshold: a pixel is background if its clean value is <= this in every channel, in [0, 1).
    """

    name: str
    norm: str = "linf"
    steps: int | None = None
    restarts: int = 1
    step_size: float = 2.5
    random_start: bool = True
    queries: int = 5000
    early_stop: bool = True
    aa_version: str = "standard"
    aa_attacks: tuple[str, ...] | None = None
    aa_few_classes: str = "error"
    mask: str | None = None
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        check_choice("attack", self.name, ATTACKS)
        norm = check_norm(self.norm)
        object.__setattr__(self, "norm", norm)
        if norm not in ATTACK_NORMS[self.name]:
            allowed = ", ".join(ATTACK_NORMS[self.name])
            raise UserError(f"attack {self.name!r} supports norm {allowed} only; got {norm!r}.")
        if self.steps is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS.get(self.name, _DEFAULT_STEPS))
        for field_name in ("steps", "restarts", "queries"):
            v = getattr(self, field_name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"--{field_name} must be an integer >= 1; got {v!r}.")
        if not self.step_size > 0:
            raise UserError(f"--step-size must be > 0; got {self.step_size!r}.")
        check_choice("aa_version", self.aa_version, AA_VERSIONS)
        check_choice("aa_few_classes", self.aa_few_classes, AA_FEW_CLASSES)
        self._check_aa_attacks()
        check_region(self.mask, self.mask_threshold)
        if self.mask is not None and not self.name.startswith("pgd"):
            raise UserError(f"--mask restricts PGD only; attack {self.name!r} cannot take a region mask.")
        if self.mask is not None and not self.early_stop:
            raise UserError("--mask needs StreamingPGD (early_stop=True); torchattacks' PGD cannot mask regions.")

    def _check_aa_attacks(self) -> None:
        if self.aa_attacks is None:
            return
        from .autoattack_ref import VERSION_ATTACKS

        subset = tuple(dict.fromkeys(self.aa_attacks))
        if self.name != "autoattack" or not subset:
            raise UserError("--aa-attacks takes a non-empty subset of the official AutoAttack's attacks "
                            "(--attack autoattack only).")
        for a in subset:
            check_choice(f"attack of AutoAttack {self.aa_version!r}", a, VERSION_ATTACKS[self.aa_version])
        full = VERSION_ATTACKS[self.aa_version]
        object.__setattr__(self, "aa_attacks", None if set(subset) == set(full) else
                           tuple(a for a in full if a in subset))

    @property
    def aa_label(self) -> str:
        """'standard', or 'standard[apgd-ce+apgd-t]' for a subset (never to be read as the full AutoAttack)."""
        return self.aa_version + (f"[{'+'.join(self.aa_attacks)}]" if self.aa_attacks else "")

    @property
    def key(self) -> str:
        return f"{self.name}-{self.norm}"

    @property
    def targeted(self) -> str | None:
        return {"pgd-random-target": "random", "pgd-least-likely": "least_likely"}.get(self.name)

    @property
    def gradient_free(self) -> bool:
        return self.name == "square"

    @property
    def minimal_norm(self) -> bool:
        """fmn / ddn / alma: per-example minimal perturbations (`run_minimal_norm`), no eps."""
        return self.name in MIN_NORM_NORMS

    @property
    def implementation(self) -> str:
        return implementation(self.name, self.early_stop)

    def settings(self, eps: float) -> dict[str, Any]:
        """The parameters actually used at `eps` (as stored in the results table)."""
        s: dict[str, Any] = {"attack": self.name, "norm": self.norm, "eps": float(eps), "targeted": self.targeted or "",
                             "restarts": self.restarts, "steps": self.steps, "step_size": float("nan"),
                             "random_start": False, "queries": 0, "protocol": "", "early_stop": False,
                             "implementation": self.implementation, "aa_version": "", "mask": self.mask or "",
                             "mask_threshold": float(self.mask_threshold) if self.mask else float("nan")}
        if self.name == "fgsm":
            s.update(steps=1, restarts=1, step_size=float(eps))
        elif self.name.startswith("pgd"):
            s.update(step_size=self.step_size * eps / self.steps, random_start=self.random_start,
                     early_stop=self.early_stop, protocol="StreamingPGD" if self.early_stop else "torchattacks")
        elif self.name == "square":
            s.update(steps=0, queries=self.queries)
        elif self.name == "autoattack":
            s.update(steps=AA_STEPS, restarts=5 if self.aa_version == "plus" else 1, queries=AA_QUERIES,
                     aa_version=self.aa_label, random_start=True,
                     protocol=(f"SUBSET of {self.aa_version}: {', '.join(self.aa_attacks)} only; " if self.aa_attacks
                               else "") + _AA_PROTOCOL[self.aa_version]
                     + " (targets n_classes - 1 if fewer than 10 classes"
                     + ("; fewer than 4 classes: the DLR attacks are dropped, aa_few_classes='fallback')"
                        if self.aa_few_classes == "fallback" else ")"))
        elif self.name == "autoattack-ta":
            s.update(steps=AA_STEPS, restarts=1, queries=AA_QUERIES, protocol="torchattacks chain, not the reference: "
                     + _AA_PROTOCOL["standard"])
        elif self.minimal_norm:
            s.update(restarts=1, protocol=f"minimal norm: {adv_lib_settings(self.name, self.norm, self.steps)}")
        return s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tanorm(norm: str) -> str:
    return "Linf" if norm == "linf" else "L2"


def build_attack(spec: AttackSpec, model: nn.Module, eps: float, num_classes: int, seed: int,
                 batch_size: int = 256, state: StateSlot | None = None) -> AttackFn:
    """The attack `spec` at one eps, as a callable `(x, y, targets, ids) -> x_adv` (targets: random-target PGD;
    ids: the examples' stable ids, which seed StreamingPGD's random starts).

    `model` must take [0, 1] pixels, be in eval mode and have its parameters frozen. `state`: where official
    AutoAttack keeps its resumable state (autoattack only; a `results.store` slot, one call per slot).
    Minimal-norm attacks (fmn, ddn, alma) have no eps: use `run_minimal_norm`.
    """
    if spec.minimal_norm:
        raise UserError(f"{spec.name} is a minimal-norm attack: it has no eps. Run attacks.registry.run_minimal_norm "
                        f"(or attacks.minimal_norm.minimal_perturbation) once and read every eps off its norms "
                        f"(robust at eps iff norm > eps).")
    if state is not None and spec.name != "autoattack":
        raise UserError(f"a resumable state is official AutoAttack's; attack {spec.name!r} does not take one.")
    if spec.name == "autoattack":
        return AutoAttackFn(spec, model, eps, seed, batch_size, state)
    if spec.name.startswith("pgd") and spec.early_stop:
        from .pgd import stream_for

        return AttackFn(None, spec, model, stream=lambda s: stream_for(
            model, spec.norm, eps, spec.steps, spec.step_size, spec.random_start, s, batch_size,
            mask=spec.mask, mask_threshold=spec.mask_threshold), seed=seed)
    return AttackFn(_torchattacks(spec, model, eps, num_classes, seed), spec, model)


def _torchattacks(spec: AttackSpec, model: nn.Module, eps: float, num_classes: int, seed: int) -> Any:
    """The torchattacks object of every attack that is not StreamingPGD or official AutoAttack."""
    import torchattacks as ta

    nt = min(AA_TARGETS, num_classes - 1)
    n = _tanorm(spec.norm)
    if spec.name == "fgsm":
        return ta.FGSM(model, eps=eps)
    if spec.name.startswith("pgd"):
        alpha = spec.step_size * eps / spec.steps
        cls = ta.PGD if spec.norm == "linf" else ta.PGDL2
        atk = cls(model, eps=eps, alpha=alpha, steps=spec.steps, random_start=spec.random_start)
        if spec.targeted == "least_likely":
            atk.set_mode_targeted_least_likely(kth_min=1)
        return atk
    if spec.name == "apgd":
        return ta.APGD(model, norm=n, eps=eps, steps=spec.steps, n_restarts=spec.restarts, seed=seed, loss="ce")
    if spec.name == "apgd-t":
        atk = ta.APGDT(model, norm=n, eps=eps, steps=spec.steps, n_restarts=spec.restarts, seed=seed,
                       n_classes=num_classes)
        atk.n_target_classes = nt
        return atk
    if spec.name == "square":
        return ta.Square(model, norm=n, eps=eps, n_queries=spec.queries, n_restarts=1, seed=seed)
    # autoattack-ta: torchattacks' components with AutoAttack's reference settings (not the official code)
    apgd = ta.APGD(model, norm=n, eps=eps, steps=AA_STEPS, n_restarts=1, seed=seed, loss="ce", rho=0.75)
    apgdt = ta.APGDT(model, norm=n, eps=eps, steps=AA_STEPS, n_restarts=1, seed=seed, n_classes=num_classes, rho=0.75)
    apgdt.n_target_classes = nt
    fab = ta.FAB(model, norm=n, eps=eps, steps=AA_STEPS, n_restarts=1, seed=seed, multi_targeted=True,
                 n_classes=num_classes)
    fab.n_target_classes = nt
    square = ta.Square(model, norm=n, eps=eps, n_queries=AA_QUERIES, n_restarts=1, p_init=0.8, seed=seed)
    return ta.MultiAttack([apgd, apgdt, fab, square])


def run_minimal_norm(spec: AttackSpec, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256,
                     device: torch.device | str = "cpu", seed: int = 0) -> MinNormResult:
    """A minimal-norm spec (fmn, ddn, alma) on (x, y): per-example smallest adversarial norms (MinNormResult)."""
    if not spec.minimal_norm:
        raise UserError(f"{spec.name} is not a minimal-norm attack; use build_attack at each eps.")
    return minimal_perturbation(model, x, y, attack=spec.name, norm=spec.norm, steps=spec.steps,
                                batch_size=batch_size, device=device, seed=seed)


def random_targets(labels: Tensor, num_classes: int, seed: int) -> Tensor:
    """A wrong class per example, uniform over the other classes, fixed by `seed` and the example's position."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, (len(labels),), generator=g)
    return (labels.cpu() + shift) % num_classes
