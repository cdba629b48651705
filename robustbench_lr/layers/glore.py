"""GloRe2d: the graph-based global reasoning unit.

Paper: Yunpeng Chen, Marcus Rohrbach, Zhicheng Yan, Shuicheng Yan, Jiashi Feng, Yannis Kalantidis.
"Graph-Based Global Reasoning Networks", CVPR 2019. https://arxiv.org/abs/1811.12814

    V = phi(X) B^T            (C' x N)  project the L = H*W positions onto N nodes, B = theta(X) (N x L)
    Z = ((I - A_g) V) W_g     (C' x N)  one graph convolution: diffuse over nodes, update states
    Y = Z B                   (C' x L)  reverse projection with the same B
    out = X + BN(W_e Y)                 1x1 extension C' -> C, BN with zero-initialised gamma

Status: follows docs/papers.md §2.1-2.2, i.e. the paper's equations and the official PyTorch unit
(facebookresearch/GloRe), re-written here: state conv C -> C' = 2 * mid and projection conv C -> N = mid
(1x1, with bias), V by a plain matrix product (no softmax; optional 1/(H*W) scaling, `normalize`), the
graph convolution as a Conv1d over the node axis (with bias) plus an identity shortcut (= (I + A) V; the
sign of a learned A is immaterial), ReLU, a Conv1d over the state axis (no bias), reverse projection with
the same B, a 1x1 conv C' -> C without bias and a BatchNorm (eps 1e-4) whose gamma starts at zero, so the
unit is an exact identity at initialisation. The official ImageNet MXNet symbols use pre-activation
BN -> ReLU -> conv inside the unit instead; that variant is not implemented. Parameter and MAC counts at
R50's res3/res4 sizes match the brief's 0.41M / 1.64M and 0.32 / 0.41 GMAC (tests/test_context_modules.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError, check_bool, check_positive_int


class GraphConv1d(nn.Module):
    """One graph convolution over node features V (N_batch, C', N): Z = W_g ReLU(V + A V).

    The node mixing A is a Conv1d over the node axis (with bias), the state update W_g a Conv1d over the
    state axis (no bias), as in the official unit.
    """

    def __init__(self, num_state: int, num_node: int) -> None:
        super().__init__()
        self.node_conv = nn.Conv1d(num_node, num_node, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.state_conv = nn.Conv1d(num_state, num_state, 1, bias=False)

    def forward(self, v: Tensor) -> Tensor:
        h = self.node_conv(v.transpose(1, 2)).transpose(1, 2)  # (N, C', nodes): A V, mixing over nodes
        h = self.relu(h + v)  # (I + A) V
        return self.state_conv(h)  # (N, C', nodes): state update W_g


class GloRe2d(nn.Module):
    """Global reasoning unit: project to a graph of `mid` nodes, one graph convolution, project back, add.

    Args:
        channels: C, input and output channels.
        mid: the unit's width: states C' = 2 * mid, nodes N = mid (the paper's default ties mid to the
            bottleneck width of the stage it sits in: 128 in R50's res3, 256 in res4).
        normalize: scale V by 1 / (H * W) (the official `normalize` flag, advised when input sizes vary).
            Off by default, as in the official models.
        zero_init: start with the BN gamma at zero, so the unit is an exact identity (default, as the
            official "blocker" BN). With False gamma starts at 1.
        bn_eps: eps of that BatchNorm (1e-4 in the official unit).

    Shape:
        input (N, C, H, W) -> output (N, C, H, W); any H, W (the node count does not depend on them).
    """

    def __init__(self, channels: int, mid: int, *, normalize: bool = False, zero_init: bool = True,
                 bn_eps: float = 1e-4) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("mid", mid)
        check_bool("normalize", normalize)
        check_bool("zero_init", zero_init)
        if isinstance(bn_eps, bool) or not isinstance(bn_eps, (int, float)) or bn_eps <= 0:
            raise UserError(f"bn_eps must be a positive number; got {bn_eps!r}.")
        self.channels = channels
        self.mid = mid
        self.num_state = 2 * mid
        self.num_node = mid
        self.normalize = normalize
        self.zero_init = zero_init
        self.conv_state = nn.Conv2d(channels, self.num_state, 1, bias=True)
        self.conv_proj = nn.Conv2d(channels, self.num_node, 1, bias=True)
        self.gcn = GraphConv1d(self.num_state, self.num_node)
        self.conv_extend = nn.Conv2d(self.num_state, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps)
        self.reset_parameters_()

    def reset_parameters_(self) -> None:
        """Gamma of the output BN to zero (identity unit) or one (`zero_init=False`), beta to zero. Models
        call this after their generic He initialisation of the convolutions."""
        nn.init.constant_(self.bn.weight, 0.0 if self.zero_init else 1.0)
        nn.init.zeros_(self.bn.bias)

    def extra_repr(self) -> str:
        return (f"{self.channels}, mid={self.mid} (states={self.num_state}, nodes={self.num_node}), "
                f"normalize={self.normalize}, zero_init={self.zero_init}")

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """State map (N, C', L) and projection map B (N, nodes, L) of a (N, C, H, W) input, L = H * W."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise UserError(f"GloRe2d expects a (N, {self.channels}, H, W) input; got shape {tuple(x.shape)}.")
        state = self.conv_state(x).flatten(2)  # (N, C', L)
        proj = self.conv_proj(x).flatten(2)  # (N, nodes, L)
        return state, proj

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        state, proj = self.project(x)  # (N, C', L), (N, nodes, L)
        v = torch.bmm(state, proj.transpose(1, 2))  # (N, C', nodes): coordinate -> interaction space
        if self.normalize:
            v = v * (1.0 / (h * w))
        z = self.gcn(v)  # (N, C', nodes)
        y = torch.bmm(z, proj).reshape(n, self.num_state, h, w)  # (N, C', H, W): reverse projection, D = B^T
        return x + self.bn(self.conv_extend(y))  # (N, C, H, W)

    def extra_macs(self, input_shape: tuple[int, ...]) -> int:
        """The two matrix products (projection and reverse projection) of one (C, H, W) image; the 1x1
        convs and the graph convolution's Conv1d's are counted as convolutions (see models.profile)."""
        length = int(input_shape[-2]) * int(input_shape[-1])
        return 2 * self.num_state * self.num_node * length


__all__ = ["GloRe2d", "GraphConv1d"]
