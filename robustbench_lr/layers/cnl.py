"""CrossLayerNonLocal2d: cross-layer non-local attention (CNL), plus the taps that feed it.

Paper: Ye, Hu, Liu, Xia, Lyu, Liu. "Associating Multi-Scale Receptive Fields for Fine-grained
Recognition", ICIP 2020. https://arxiv.org/abs/2005.09153

    theta = W_theta x^q,  phi_i = W_phi_i x^{r_i},  g_i = W_g_i x^{r_i}          (1x1 convs into d = C_q / 8)
    A_i   = softmax_j( theta^T phi_i / sqrt(d) )                                 (H_q W_q x H_i W_i)
    O_i   = A_i g_i^T  reshaped to d x H_q x W_q
    CNL(x^q) = x^q + sum_i BN_i( W_z O_i )                                       (W_z: d -> C_q, shared)

Status: follows docs/papers.md §3.2, which describes the official code (FouriYe/CNL-ICIP2020; the paper's
own equations were not available), re-written here: theta and W_z shared, phi_i / g_i and BN_i per response,
scaled dot product, one softmax per response layer (the code) by default and one joint softmax over all
response positions (the paper's figure) with `joint_softmax=True`; every conv ~ N(0, 0.01) without bias,
every BN gamma = beta = 0, so the module starts as an exact identity. The product A_i g_i^T is
(H_q W_q x d); by default it is transposed before the reshape to (d, H_q, W_q) (the mathematically clean
layout); `legacy_reshape=True` reshapes it without the transpose, as the released code does, which mixes
channels and positions before W_z.

Wiring: the module needs the outputs of earlier blocks. `FeatureTap(store, key)` modules, inserted after
the response blocks, put their input (unchanged) into a shared `TapStore`; the CNL module, inserted after
the query block, pops them from the same store (so no activation outlives the forward pass). Standalone,
call `cnl(x_query, [x_r1, x_r2, ...])`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError, check_bool, check_positive_int


class TapStore:
    """A per-forward mailbox from `FeatureTap` modules to the module that reads them (CNL).

    A plain object (not a Module): it holds no parameters or buffers and is shared by reference between the
    taps and the reader of one model (`copy.deepcopy` of the model keeps it shared within the copy). Entries
    are removed when read. One forward at a time per model instance: it is not meant for
    `nn.DataParallel`'s thread replicas (DistributedDataParallel, one process per model, is fine).
    """

    def __init__(self) -> None:
        self._features: dict[str, Tensor] = {}

    def put(self, key: str, x: Tensor) -> None:
        self._features[key] = x

    def pop(self, key: str) -> Tensor:
        try:
            return self._features.pop(key)
        except KeyError:
            raise RuntimeError(f"no feature recorded under {key!r}: the FeatureTap for it must run before the "
                               f"module that reads it, in the same forward pass") from None

    def clear(self) -> None:
        self._features.clear()

    def __len__(self) -> int:
        return len(self._features)

    def __repr__(self) -> str:
        return f"TapStore(pending={sorted(self._features)})"


class FeatureTap(nn.Module):
    """Identity that records its input in `store` under `key` (for a later cross-layer module)."""

    def __init__(self, store: TapStore, key: str) -> None:
        super().__init__()
        self.store = store
        self.key = key

    def forward(self, x: Tensor) -> Tensor:
        self.store.put(self.key, x)
        return x

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


class CrossLayerNonLocal2d(nn.Module):
    """Cross-layer non-local block: the query layer attends to n response layers; the result is added to it.

    Args:
        query_channels: C_q, channels of the query feature map (input and output).
        response_channels: C_i of each response feature map (n >= 1 entries).
        reduction: d = C_q // reduction embedding channels (8 in the official code: 2048 -> 256).
        joint_softmax: one softmax over the concatenated positions of all responses (the figure) instead of
            one per response (the code, default).
        legacy_reshape: reshape the (H_q W_q, d) product to (d, H_q, W_q) without transposing it first, as
            the released code does (mixes channels and positions). Default False: transpose, then reshape.
        use_scale: divide the logits by sqrt(d) (on in the official code).
        zero_init: BN gammas start at zero, so the block is an exact identity (default, as the official
            code). With False they start at one.
        store, keys: where to read the responses when `forward` gets none (see `FeatureTap`); `keys` has
            one entry per response, in the order of `response_channels`.

    Shape:
        query (N, C_q, H_q, W_q), responses (N, C_i, H_i, W_i) -> (N, C_q, H_q, W_q).
    """

    def __init__(self, query_channels: int, response_channels: Sequence[int], *, reduction: int = 8,
                 joint_softmax: bool = False, legacy_reshape: bool = False, use_scale: bool = True,
                 zero_init: bool = True, store: TapStore | None = None, keys: Sequence[str] | None = None) -> None:
        super().__init__()
        check_positive_int("query_channels", query_channels)
        if isinstance(response_channels, (str, bytes)) or not isinstance(response_channels, Sequence) \
                or len(response_channels) == 0:
            raise UserError(f"response_channels must be a non-empty list of channel counts; "
                            f"got {response_channels!r}.")
        for c in response_channels:
            check_positive_int("response_channels", c)
        check_positive_int("reduction", reduction)
        if query_channels // reduction < 1:
            raise UserError(f"reduction={reduction} leaves no embedding channels for query_channels="
                            f"{query_channels}; use a reduction <= {query_channels}.")
        for name, v in (("joint_softmax", joint_softmax), ("legacy_reshape", legacy_reshape),
                        ("use_scale", use_scale), ("zero_init", zero_init)):
            check_bool(name, v)
        if keys is not None and len(keys) != len(response_channels):
            raise UserError(f"keys must have one entry per response ({len(response_channels)}); got {list(keys)!r}.")
        if (store is None) != (keys is None):
            raise UserError("store and keys must be given together (or neither).")

        self.query_channels = query_channels
        self.response_channels = tuple(int(c) for c in response_channels)
        self.reduction = reduction
        self.inter_channels = d = query_channels // reduction
        self.joint_softmax = joint_softmax
        self.legacy_reshape = legacy_reshape
        self.use_scale = use_scale
        self.zero_init = zero_init
        self.store = store
        self.keys = tuple(keys) if keys is not None else None
        self._response_positions: tuple[int, ...] | None = None  # H_i * W_i of the last forward (for MACs)

        self.theta = nn.Conv2d(query_channels, d, 1, bias=False)
        self.phi = nn.ModuleList(nn.Conv2d(c, d, 1, bias=False) for c in self.response_channels)
        self.g = nn.ModuleList(nn.Conv2d(c, d, 1, bias=False) for c in self.response_channels)
        self.w_z = nn.Conv2d(d, query_channels, 1, bias=False)
        self.bns = nn.ModuleList(nn.BatchNorm2d(query_channels) for _ in self.response_channels)
        self.reset_parameters_()

    def reset_parameters_(self) -> None:
        """Official initialisation: every conv ~ N(0, 0.01); BN gamma = 0 (1 if not `zero_init`), beta = 0.
        Models call this after their generic He initialisation."""
        for conv in (self.theta, *self.phi, *self.g, self.w_z):
            nn.init.normal_(conv.weight, std=0.01)
        for bn in self.bns:
            nn.init.constant_(bn.weight, 0.0 if self.zero_init else 1.0)
            nn.init.zeros_(bn.bias)

    def extra_repr(self) -> str:
        return (f"query_channels={self.query_channels}, response_channels={self.response_channels}, "
                f"d={self.inter_channels}, joint_softmax={self.joint_softmax}, "
                f"legacy_reshape={self.legacy_reshape}, keys={self.keys}")

    def _responses(self, x: Tensor, responses: Sequence[Tensor] | None) -> list[Tensor]:
        if x.dim() != 4 or x.shape[1] != self.query_channels:
            raise UserError(f"CrossLayerNonLocal2d expects a (N, {self.query_channels}, H, W) query; "
                            f"got shape {tuple(x.shape)}.")
        if responses is None:
            if self.store is None or self.keys is None:
                raise UserError("CrossLayerNonLocal2d has no tap store: pass the response feature maps.")
            responses = [self.store.pop(k) for k in self.keys]
        responses = list(responses)
        if len(responses) != len(self.response_channels):
            raise UserError(f"expected {len(self.response_channels)} response feature maps; got {len(responses)}.")
        for i, (r, c) in enumerate(zip(responses, self.response_channels)):
            if r.dim() != 4 or r.shape[1] != c or r.shape[0] != x.shape[0]:
                raise UserError(f"response {i} must be ({x.shape[0]}, {c}, H, W); got shape {tuple(r.shape)}.")
        self._response_positions = tuple(int(r.shape[-2]) * int(r.shape[-1]) for r in responses)
        return responses

    def _attention(self, x: Tensor, responses: list[Tensor]) -> list[Tensor]:
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, Lq, d)
        if self.use_scale:
            theta = theta * (1.0 / math.sqrt(self.inter_channels))
        logits = [torch.bmm(theta, phi(r).flatten(2)) for phi, r in zip(self.phi, responses)]  # (N, Lq, L_i)
        if not self.joint_softmax:
            return [a.softmax(dim=-1) for a in logits]
        sizes = [a.shape[-1] for a in logits]
        return list(torch.cat(logits, dim=-1).softmax(dim=-1).split(sizes, dim=-1))  # one softmax over sum L_i

    def attention_maps(self, x: Tensor, responses: Sequence[Tensor] | None = None) -> list[Tensor]:
        """The attention matrices A_i, each (N, H_q W_q, H_i W_i); rows sum to 1 per response (default)
        or over all responses together (`joint_softmax`)."""
        return self._attention(x, self._responses(x, responses))

    def forward(self, x: Tensor, responses: Sequence[Tensor] | None = None) -> Tensor:
        n, _, hq, wq = x.shape
        d = self.inter_channels
        responses = self._responses(x, responses)
        attn = self._attention(x, responses)
        out = x
        for a, g, bn, r in zip(attn, self.g, self.bns, responses):
            o = torch.bmm(a, g(r).flatten(2).transpose(1, 2))  # (N, Lq, d)
            if self.legacy_reshape:
                o = o.reshape(n, d, hq, wq)  # the released code: no transpose, channels and positions mixed
            else:
                o = o.transpose(1, 2).reshape(n, d, hq, wq)  # (N, d, Hq, Wq)
            out = out + bn(self.w_z(o))  # (N, C_q, Hq, Wq)
        return out

    def extra_macs(self, input_shape: tuple[int, ...]) -> int:
        """The logits theta^T phi_i and the aggregation A_i g_i of one image (2 * d * L_q * L_i per response);
        the 1x1 embeddings are counted as convolutions (see models.profile). Uses the response sizes of the
        last forward pass."""
        if self._response_positions is None:
            raise RuntimeError("extra_macs needs the response sizes: run a forward pass first")
        lq = int(input_shape[-2]) * int(input_shape[-1])
        return 2 * self.inter_channels * lq * sum(self._response_positions)


__all__ = ["CrossLayerNonLocal2d", "FeatureTap", "TapStore"]
