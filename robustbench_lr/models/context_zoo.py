"""Context-module baselines on the conv skeleton: GloRe, CNL and (reconstructed) MS-SAR.

For m in glore, cnl, mssar this registers `resnet26_<m>` (3x224x224, 1000 classes), `resnet26_cifar_<m>`
(3x32x32, 10 classes) and `resnet_tiny_<m>` (1x28x28, 10 classes), built on the same specs as `resnet26`,
`resnet26_cifar` and `resnet_tiny` (read from `zoo` when this module is imported). They take the same
arguments as their base (num_classes, in_chans, kernel_size, width, mean, std, zero_init_residual,
stem_kernel_size) plus the module options below, and `zero_init_context` (None: follow
`zero_init_residual`; True: every added module starts as an exact identity; False: gates start open,
which the gradient-flow tests need since a zero gate blocks the gradient of everything behind it).

Placements are stated relative to the number of stages S and the blocks per stage, so they carry over to
any layout (R26 has 2 blocks in each of 4 stages; the tiny net has S = 3, one block each):

GloRe (docs/papers.md §2.2). R50's official (2,3) config puts units after blocks 1, 3 of res3 and 1, 3, 5 of
    res4, i.e. after every other block starting with the first, in the third- and second-to-last stages.
    The same rule on R26 gives one unit after block 1 of res3 and one after block 1 of res4: the "(1,1)"
    config (`glore_placement='res3+res4'`, default); 'res4' keeps only the res4 unit(s), the "(0,k)"
    variant. mid = the stage's bottleneck width (states 2 * mid, nodes mid), as the paper.
CNL (docs/papers.md §3.3). R50's official 5CNL: query = output of block 2 of res5 (the block before the
    last), responses = outputs of blocks 2, 4 of res3 and 2, 4, 6 of res4 (every other block counting back
    from each stage's last), CNL added onto the query before res5's last block. The same rules on R26:
    query = output of res5 block 1 (CNL runs before res5 block 2), responses = res3 block 2 and res4 block 2
    (2 responses; `cnl_responses='all'` takes all four blocks of res3 and res4). When the last stage has a
    single block (the tiny net at the time of writing), the CNL follows it, just before the pooling.
MS-SAR (docs/papers.md §4.3, a reconstruction): one gate on the residual branch of every block, before the
    addition (the SE placement; the abstract says it is applied to residual blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch.nn as nn

from ..errors import UserError, check_bool, check_choice
from ..layers.cnl import CrossLayerNonLocal2d, FeatureTap, TapStore
from ..layers.glore import GloRe2d
from ..layers.mssar import MSSAR2d
from . import zoo
from ._registry import ModelInfo, register_model
from .resnet import ResNet, ResNetSpec

GLORE_PLACEMENTS = ("res3+res4", "res4")
CNL_RESPONSES = ("every_other", "all")
FAMILIES = ("glore", "cnl", "mssar")


def _bases() -> dict[str, tuple[ResNetSpec, tuple[int, int, int], int, str]]:
    """Base name -> (spec, input size, classes, short description), read from `zoo` at registration time."""
    return {
        "resnet26": (zoo.RESNET26, (3, 224, 224), 1000, "ResNet-26"),
        "resnet26_cifar": (replace(zoo.RESNET26, stem="small"), (3, 32, 32), 10, "ResNet-26 (32 px stem)"),
        "resnet_tiny": (zoo.TINY, (1, 28, 28), 10, "tiny ResNet"),
    }


# ----------------------------------------------------------------------------------------------------------
# Placements (0-based stage and block indices)


def glore_positions(layers: Sequence[int], placement: str = "res3+res4") -> list[tuple[int, int]]:
    """(stage, block) pairs after which a GloRe unit goes: every other block from the first, in the
    third- and second-to-last stages ('res3+res4') or the second-to-last only ('res4')."""
    check_choice("glore_placement", placement, GLORE_PLACEMENTS)
    n = len(layers)
    stages = (n - 3, n - 2) if placement == "res3+res4" else (n - 2,)
    return [(s, b) for s in stages if s >= 0 for b in range(0, layers[s], 2)]


def cnl_positions(layers: Sequence[int], responses: str = "every_other") -> tuple[tuple[int, int],
                                                                                   list[tuple[int, int]]]:
    """(query, responses): the query is the block before the last of the last stage (the only block if it
    has one); responses are every other block counting back from the last ('every_other') or all blocks
    ('all') of the two stages before the last."""
    check_choice("cnl_responses", responses, CNL_RESPONSES)
    n = len(layers)
    query = (n - 1, max(0, layers[n - 1] - 2))
    resp: list[tuple[int, int]] = []
    for s in (n - 3, n - 2):
        if s < 0:
            continue
        blocks = range(layers[s]) if responses == "all" else range(layers[s] - 1, -1, -2)
        resp.extend((s, b) for b in sorted(blocks))
    if not resp:
        raise UserError(f"a CNL model needs at least 2 stages (responses come from the stages before the "
                        f"query's); this layout has {n}.")
    return query, resp


# ----------------------------------------------------------------------------------------------------------
# Builders


def _zero_init(zero_init_residual: bool, zero_init_context: bool | None) -> bool:
    if zero_init_context is None:
        return bool(zero_init_residual)
    if not isinstance(zero_init_context, bool):
        raise UserError(f"zero_init_context must be True, False or None; got {zero_init_context!r}.")
    return zero_init_context


def _check_options(family: str, spatial_kwargs: dict[str, Any], known: Sequence[str]) -> None:
    """Misspelled module options would otherwise reach the spatial operator with a confusing message."""
    bad = sorted(k for k in spatial_kwargs if k.startswith(tuple(f"{f}_" for f in FAMILIES)) or k.startswith("zero_"))
    if bad:
        raise UserError(f"{family} models do not take {', '.join(bad)}; their module options are: "
                        f"{', '.join(known)}, zero_init_context.")


def _probe(prefix: str, make: Callable[[], nn.Module]) -> None:
    """Build one module with the model's options on valid channel counts, so a bad option fails before the
    network is built, with the option named as the model takes it (the module's messages start with the
    argument's name: 'reduction must be ...' -> 'cnl_reduction must be ...')."""
    try:
        make()
    except UserError as exc:
        raise UserError(f"{prefix}{exc}") from None


def build_glore(spec: ResNetSpec, *, glore_placement: str = "res3+res4", glore_normalize: bool = False,
                zero_init_context: bool | None = None, zero_init_residual: bool = True, **kwargs: Any) -> ResNet:
    """`build_resnet(spec, ...)` with GloRe units after the blocks of `glore_positions`."""
    positions = set(glore_positions(spec.layers, glore_placement))
    check_bool("glore_normalize", glore_normalize)
    zi = _zero_init(zero_init_residual, zero_init_context)

    def after_block(stage: int, block: int, out_channels: int, width: int) -> nn.Module | None:
        if (stage, block) not in positions:
            return None
        return GloRe2d(out_channels, width, normalize=glore_normalize, zero_init=zi)

    return zoo.build_resnet(spec, zero_init_residual=zero_init_residual, after_block=after_block, **kwargs)


def build_cnl(spec: ResNetSpec, *, cnl_responses: str = "every_other", cnl_reduction: int = 8,
              cnl_joint_softmax: bool = False, cnl_legacy_reshape: bool = False,
              zero_init_context: bool | None = None, zero_init_residual: bool = True, **kwargs: Any) -> ResNet:
    """`build_resnet(spec, ...)` with feature taps after the response blocks and a CNL block after the query
    block (see `cnl_positions`); taps and CNL share one `TapStore`."""
    query, responses = cnl_positions(spec.layers, cnl_responses)
    zi = _zero_init(zero_init_residual, zero_init_context)
    store = TapStore()
    keys: list[str] = []
    channels: list[int] = []
    options = {"reduction": cnl_reduction, "joint_softmax": cnl_joint_softmax, "legacy_reshape": cnl_legacy_reshape}
    probe_channels = cnl_reduction if isinstance(cnl_reduction, int) and cnl_reduction >= 1 else 1
    _probe("cnl_", lambda: CrossLayerNonLocal2d(probe_channels, [1], **options))

    def after_block(stage: int, block: int, out_channels: int, width: int) -> nn.Module | None:
        if (stage, block) in responses:
            keys.append(f"stage{stage}.block{block}")
            channels.append(out_channels)
            return FeatureTap(store, keys[-1])
        if (stage, block) == query:
            if out_channels < cnl_reduction:
                raise UserError(f"cnl_reduction={cnl_reduction} leaves no embedding channels for the query's "
                                f"{out_channels} channels; use cnl_reduction <= {out_channels}.")
            return CrossLayerNonLocal2d(out_channels, list(channels), store=store, keys=list(keys), zero_init=zi,
                                        **options)
        return None

    return zoo.build_resnet(spec, zero_init_residual=zero_init_residual, after_block=after_block, **kwargs)


def build_mssar(spec: ResNetSpec, *, mssar_scales: Sequence[int] = (3, 7, 15), mssar_reduction: int | None = 16,
                mssar_kernel_size: int = 3, mssar_score: str = "channel", mssar_dilated: bool = True,
                zero_init_context: bool | None = None, zero_init_residual: bool = True, **kwargs: Any) -> ResNet:
    """`build_resnet(spec, ...)` with an MS-SAR gate on the residual branch of every block."""
    zi = _zero_init(zero_init_residual, zero_init_context)
    options = {"scales": mssar_scales, "reduction": mssar_reduction, "kernel_size": mssar_kernel_size,
               "score": mssar_score, "dilated": mssar_dilated}
    _probe("mssar_", lambda: MSSAR2d(16, **options))

    def attach(stage: int, block: int, out_channels: int, width: int) -> nn.Module:
        return MSSAR2d(out_channels, zero_init=zi, **options)

    return zoo.build_resnet(spec, zero_init_residual=zero_init_residual, attach=attach, **kwargs)


_BUILDERS: dict[str, Callable[..., ResNet]] = {"glore": build_glore, "cnl": build_cnl, "mssar": build_mssar}
_OPTIONS: dict[str, dict[str, Any]] = {
    "glore": {"glore_placement": "res3+res4", "glore_normalize": False},
    "cnl": {"cnl_responses": "every_other", "cnl_reduction": 8, "cnl_joint_softmax": False,
            "cnl_legacy_reshape": False},
    "mssar": {"mssar_scales": (3, 7, 15), "mssar_reduction": 16, "mssar_kernel_size": 3, "mssar_score": "channel",
              "mssar_dilated": True},
}


def _describe(family: str, base_desc: str, spec: ResNetSpec) -> str:
    if family == "glore":
        pos = glore_positions(spec.layers)
        where = ", ".join(f"stage {s + 1} block {b + 1}" for s, b in pos)
        return f"{base_desc} + GloRe units (states 2*width, nodes width) after {where}; zero-gamma BN"
    if family == "cnl":
        (qs, qb), resp = cnl_positions(spec.layers)
        rs = ", ".join(f"s{s + 1}b{b + 1}" for s, b in resp)
        return (f"{base_desc} + cross-layer non-local: query = stage {qs + 1} block {qb + 1} output, "
                f"responses {rs}, d = C/8, softmax per response")
    return (f"{base_desc} + MS-SAR gate on every residual branch (RECONSTRUCTION, not the paper's formula: "
            f"scales 3/7/15, r=16, 3x3 depthwise)")


def _register(family: str, base_name: str) -> None:
    spec, input_size, classes, base_desc = _bases()[base_name]
    name = f"{base_name}_{family}"
    info = ModelInfo(name=name, family=family, spatial=spec.spatial, kernel_size=spec.kernel_size,
                     input_size=input_size, num_classes=classes, description=_describe(family, base_desc, spec),
                     defaults=dict(_OPTIONS[family]))
    build = _BUILDERS[family]
    known = list(_OPTIONS[family])

    def builder(num_classes: int, in_chans: int, kernel_size: int, width: float = 1.0,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                zero_init_residual: bool = True, stem_kernel_size: int | None = None,
                zero_init_context: bool | None = None, **kwargs: Any) -> nn.Module:
        options = {k: kwargs.pop(k) for k in known if k in kwargs}
        _check_options(family, kwargs, known)
        return build(spec, num_classes=num_classes, in_chans=in_chans, kernel_size=kernel_size, width=width,
                     mean=mean, std=std, zero_init_residual=zero_init_residual, stem_kernel_size=stem_kernel_size,
                     zero_init_context=zero_init_context, **options, **kwargs)

    builder.__name__ = name
    builder.__doc__ = f"{info.description}. Module options: {', '.join(known)}, zero_init_context."
    register_model(info)(builder)


for _family in FAMILIES:
    for _base in ("resnet26", "resnet26_cifar", "resnet_tiny"):
        _register(_family, _base)

__all__ = ["build_cnl", "build_glore", "build_mssar", "cnl_positions", "glore_positions", "GLORE_PLACEMENTS",
           "CNL_RESPONSES"]
