"""Projected gradient descent with per-example early stopping, in fixed-size streaming batches.

Paper: Madry, Makelov, Schmidt, Tsipras, Vladu. "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018. https://arxiv.org/abs/1706.06083

Status: the update rule is torchattacks' PGD / PGDL2 (Linf: x <- clip(x + alpha * sign(g)) projected onto the
eps-ball and [0, 1]; L2: a step of length alpha along g / ||g|| then projection onto the ball), and with
`early_stop=False` the result equals torchattacks' for the same random start (tests/test_pgd.py). What
torchattacks does not do, and why this file exists:
- early stopping: an example leaves the attack at the first iterate that fools the model (torchattacks returns
  the last iterate, so an example fooled at step 5 but not at step 20 would count as robust there). This
  never raises robust accuracy and saves most gradient evaluations on non-robust models;
- streaming: a fixed batch of B slots; a finished slot is refilled from the queue, so every step runs the same
  batch shape (one compiled graph per shape with `compile=True`, CUDA graphs friendly);
- random starts drawn per example from (seed, example id, eps), so results do not depend on how examples are
  batched or sharded over torchrun ranks, and the starts of two eps of a sweep are independent draws (not one
  draw scaled by eps); restarts enter through the seed (`AttackFn` passes seed + 7919 * restart);
- optional region mask (`attacks.masks`): only the background or only the foreground pixels of the clean
  image are perturbed; the others stay bit-identical to the clean image through start, steps and projection;
- optional bf16 autocast for the gradient passes (CUDA; the loss and the final check stay fp32) and
  channels_last memory format.
"""

from __future__ import annotations

import hashlib
import struct

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import check_region, region_mask


def _generator(seed: int, example_id: int, eps: float, salt: int) -> torch.Generator:
    """A CPU generator seeded from (seed, example id, eps, salt) by a hash: every cell of a sweep and every
    example get their own stream, whatever the batching."""
    key = struct.pack("<qqdq", seed % 2**63, example_id % 2**63, float(eps), salt)
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def _per_example_uniform(shape: tuple[int, ...], ids: Tensor, seed: int, eps: float,
                         mask: Tensor | None = None) -> Tensor:
    """Uniform(-eps, eps) noise of `shape` (C, H, W) per example id (n,), zero outside `mask` (n, 1, H, W)."""
    out = torch.empty((len(ids), *shape))
    for i, e in enumerate(ids.tolist()):
        out[i].uniform_(-eps, eps, generator=_generator(seed, int(e), eps, 17))
    return out if mask is None else out * mask.cpu()


def _per_example_l2_start(shape: tuple[int, ...], ids: Tensor, seed: int, eps: float,
                          mask: Tensor | None = None) -> Tensor:
    """torchattacks' L2 random start: a random direction (restricted to `mask`) scaled by eps * U(0, 1)."""
    out = torch.empty((len(ids), *shape))
    for i, e in enumerate(ids.tolist()):
        g = _generator(seed, int(e), eps, 29)
        d = torch.randn(shape, generator=g)
        if mask is not None:
            d = d * mask[i].cpu()
        r = torch.rand((), generator=g)
        out[i] = d / d.norm().clamp_min(1e-12) * r * eps
    return out


class StreamingPGD:
    """PGD over a whole set of examples with per-example early stopping and fixed-size batches.

    Args:
        model: classifier on [0, 1] pixels, in eval mode with frozen parameters.
        norm: 'linf' or 'l2'.
        eps: budget in that norm.
        alpha: step size (Linf: per-pixel; L2: step length).
        steps: maximum iterations per example.
        random_start: start from a random point of the eps-ball (per example, from `seed`, the id and eps).
        early_stop: stop iterating an example once it is misclassified (or hits its target when targeted).
        batch_size: slots processed per step.
        seed: seed of the random starts.
        amp: bf16 autocast for the forward/backward of the steps (CUDA only; ignored on CPU).
        channels_last: use the channels_last memory format for inputs.
        compile: compile the gradient step with torch.compile (one graph for the fixed batch shape).
        fixed_shape: keep every step at batch_size slots (default: with compile); otherwise the batch shrinks to
            the live slots once the queue is empty.
        mask: None, 'background' or 'foreground' (`attacks.masks.region_mask` of the clean image): only those
            pixels are perturbed; the others keep their clean value exactly. The L2 step and start are
            normalised over the masked pixels.
        mask_threshold: pixel value in [0, 1) below or at which (in every channel) a pixel is background.

    Call with (x, y, ids, targets=None) -> x_adv: x (n, C, H, W) in [0, 1] (any device), y (n,), ids (n,) the
    examples' stable ids (for the random starts), targets (n,) for a targeted attack. `grad_evals` and `forwards`
    count per-example gradient and forward passes.
    """

    def __init__(self, model: nn.Module, norm: str, eps: float, alpha: float, steps: int, *, random_start: bool = True,
                 early_stop: bool = True, batch_size: int = 256, seed: int = 0, amp: bool = False,
                 channels_last: bool = False, compile: bool = False, fixed_shape: bool | None = None,
                 mask: str | None = None, mask_threshold: float = 0.0) -> None:
        check_region(mask, mask_threshold)
        self.model, self.norm, self.eps, self.alpha, self.steps = model, norm, float(eps), float(alpha), int(steps)
        self.random_start, self.early_stop, self.batch_size, self.seed = random_start, early_stop, batch_size, seed
        self.amp, self.channels_last = amp, channels_last
        self.mask, self.mask_threshold = mask, float(mask_threshold)
        self.grad_evals = self.forwards = 0
        self.compiled = compile
        self.fixed_shape = compile if fixed_shape is None else fixed_shape
        self._grad = torch.compile(self._grad_impl, dynamic=False) if compile else self._grad_impl

    def _grad_impl(self, xa: Tensor, y: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        """(logits fp32, d loss / d xa) for a batch; sign = +1 untargeted (ascend CE), -1 targeted (descend)."""
        with torch.enable_grad():
            xa = xa.detach().requires_grad_(True)
            dev = xa.device.type
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=self.amp and dev == "cuda"):
                logits = self.model(xa)
            loss = sign * F.cross_entropy(logits.float(), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xa)
        return logits.detach().float(), g

    def _start(self, x: Tensor, ids: Tensor, mk: Tensor | None = None) -> Tensor:
        """The first iterate of examples x (k, C, H, W) with ids (k,) and masks mk (k, 1, H, W) or None."""
        if not self.random_start or self.eps == 0:
            return x.clone()
        shape = tuple(x.shape[1:])
        make = _per_example_uniform if self.norm == "linf" else _per_example_l2_start
        noise = make(shape, ids.cpu(), self.seed, self.eps, mk).to(x)
        return (x + noise).clamp(0, 1)

    def _project(self, x0: Tensor, xa: Tensor, mk: Tensor | None = None) -> Tensor:
        d = xa - x0
        if mk is not None:
            d = d * mk
        if self.norm == "linf":
            d = d.clamp(-self.eps, self.eps)
        else:
            n = d.flatten(1).norm(dim=1).clamp_min(1e-12)
            d = d * torch.clamp(self.eps / n, max=1.0).view(-1, *([1] * (d.dim() - 1)))
        return (x0 + d).clamp(0, 1)

    def _step(self, xa: Tensor, g: Tensor, mk: Tensor | None = None) -> Tensor:
        if mk is not None:
            g = g * mk
        if self.norm == "linf":
            return xa + self.alpha * g.sign()
        n = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
        return xa + self.alpha * g / n

    def _done(self, logits: Tensor, yb: Tensor, live: Tensor, targeted: bool) -> Tensor:
        """Count this step's gradient evaluations; (b,) mask of live slots that already succeed."""
        nlive = int(live.sum())
        self.forwards += nlive
        self.grad_evals += nlive
        if not self.early_stop:
            return torch.zeros_like(live)
        pred = logits.argmax(1)
        return ((pred == yb) if targeted else (pred != yb)) & live

    def __call__(self, x: Tensor, y: Tensor, ids: Tensor, targets: Tensor | None = None) -> Tensor:
        n = len(x)
        out = x.clone()
        if n == 0 or self.eps == 0:
            return out
        dev = x.device
        fmt = torch.channels_last if (self.channels_last and x.dim() == 4) else torch.contiguous_format
        b = min(self.batch_size, n)
        sign = -1.0 if targets is not None else 1.0
        goal = targets if targets is not None else y
        masks = region_mask(x, self.mask, self.mask_threshold) if self.mask is not None else None  # (n, 1, H, W)
        queue = list(range(n))
        slot_ex = torch.full((b,), -1, dtype=torch.long, device=dev)  # example in each slot, -1 = empty
        slot_step = torch.zeros(b, dtype=torch.long, device=dev)
        x0 = torch.zeros((b, *x.shape[1:]), dtype=x.dtype, device=dev).contiguous(memory_format=fmt)
        xa = x0.clone()
        yb = torch.zeros(b, dtype=torch.long, device=dev)
        mk = None if masks is None else torch.zeros((b, *masks.shape[1:]), dtype=x.dtype, device=dev)

        def refill(free: Tensor) -> None:
            for s in free.tolist():
                if not queue:
                    slot_ex[s] = -1
                    continue
                e = queue.pop(0)
                slot_ex[s] = e
                slot_step[s] = 0
                x0[s] = x[e]
                if mk is not None:
                    mk[s] = masks[e]
                xa[s] = self._start(x[e: e + 1], ids[e: e + 1], None if mk is None else masks[e: e + 1])[0]
                yb[s] = goal[e]

        refill(torch.arange(b))
        while bool((slot_ex >= 0).any()):
            live = slot_ex >= 0
            if not self.fixed_shape and not queue and not bool(live.all()):
                # the queue is empty: without a compiled graph there is no reason to keep dead slots
                keep = live.nonzero().flatten()
                slot_ex, slot_step, x0, xa, yb = (t[keep] for t in (slot_ex, slot_step, x0, xa, yb))
                mk = None if mk is None else mk[keep]
                live = slot_ex >= 0
            logits, g = self._grad(xa, yb, sign)
            done_now = self._done(logits, yb, live, targets is not None)
            # fooled at the current point: keep it, no further step
            upd = live & ~done_now
            if bool(upd.any()):
                stepped = self._project(x0, self._step(xa, g, mk), mk)
                xa = torch.where(upd.view(-1, *([1] * (xa.dim() - 1))), stepped, xa)
                slot_step = slot_step + upd.long()
            finished = done_now | (live & (slot_step >= self.steps))
            if bool(finished.any()):
                fi = finished.nonzero().flatten()
                out[slot_ex[fi]] = xa[fi].to(out.dtype).contiguous()
                refill(fi)
        return out


def stream_for(model: nn.Module, norm: str, eps: float, steps: int, step_size: float, random_start: bool, seed: int,
               batch_size: int, early_stop: bool = True, amp: bool = False, channels_last: bool = False,
               compile: bool = False, mask: str | None = None, mask_threshold: float = 0.0) -> StreamingPGD:
    """The StreamingPGD of an attack spec: alpha = step_size * eps / steps (Madry et al.'s 2.5 by default)."""
    alpha = step_size * eps / steps if steps else 0.0
    return StreamingPGD(model, norm, eps, alpha, steps, random_start=random_start, early_stop=early_stop,
                        batch_size=batch_size, seed=seed, amp=amp, channels_last=channels_last, compile=compile,
                        mask=mask, mask_threshold=mask_threshold)


__all__ = ["StreamingPGD", "stream_for"]
