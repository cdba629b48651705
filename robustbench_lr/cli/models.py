"""`robustbench-lr models`: the model zoo as a table (parameters and MACs at the default resolution).

Models that add a module to a plain conv network (GloRe, CNL, MS-SAR, ...; any family other than 'conv'
and 'lr') also show their overhead over that network: the registered conv model whose name is the longest
prefix of theirs followed by '_' (resnet26_cifar for resnet26_cifar_glore, resnet26 for resnet26_cnl),
built with the same kernel size. The overhead columns are NaN for the base models and LR models.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pandas as pd

from ..models import create_model, list_models, model_info
from ..models.profile import count_macs, count_params


OVERHEAD_COLUMNS = ("d_params_M", "d_params_%", "d_GMACs", "d_GMACs_%")


def conv_counterpart(name: str) -> str | None:
    """The plain conv model a context-module model extends (None for conv and LR models, or if none)."""
    if model_info(name).family in ("conv", "lr"):
        return None
    bases = [b for b in list_models() if model_info(b).family == "conv" and name.startswith(b + "_")]
    return max(bases, key=len) if bases else None


def _counts(name: str, kernel_size: int | None) -> tuple[float, float]:
    info = model_info(name)
    model = create_model(name, kernel_size=kernel_size)
    return count_params(model) / 1e6, count_macs(model, info.input_size) / 1e9


def zoo_table(pattern: str = "*", kernel_size: int | None = None) -> pd.DataFrame:
    """One row per registered model: name, family, spatial op, k, params, GMACs, input size, and the
    parameter / GMAC overheads over the plain conv counterpart (absolute and in %; NaN where none)."""
    rows = []
    names = list_models(pattern)
    counts: dict[str, tuple[float, float]] = {}
    for name in names:
        info = model_info(name)
        counts[name] = params_m, gmacs = _counts(name, kernel_size)
        k = kernel_size or info.kernel_size
        row = {"model": name, "family": info.family, "spatial": info.spatial, "k": k,
               "params_M": params_m, "GMACs": gmacs, **{c: float("nan") for c in OVERHEAD_COLUMNS},
               "input": "x".join(str(v) for v in info.input_size), "classes": info.num_classes,
               "description": info.description}
        base = conv_counterpart(name)
        if base is not None:
            if base not in counts:
                counts[base] = _counts(base, kernel_size)
            b_params, b_gmacs = counts[base]
            row.update({"d_params_M": params_m - b_params, "d_params_%": 100.0 * (params_m - b_params) / b_params,
                        "d_GMACs": gmacs - b_gmacs, "d_GMACs_%": 100.0 * (gmacs - b_gmacs) / b_gmacs})
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(spec: str) -> Callable[[float], str]:
    return lambda v: "" if pd.isna(v) else spec.format(v)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError

    df = zoo_table(args.pattern, args.kernel_size)
    if df.empty:
        raise UserError(f"no model matches {args.pattern!r}; run `robustbench-lr models` for the list.")
    cols = ["model", "family", "spatial", "k", "params_M", "GMACs", *OVERHEAD_COLUMNS, "input", "classes"]
    if args.long:
        cols.append("description")
    formatters = {"params_M": "{:.2f}M".format, "GMACs": "{:.3f}".format, "d_params_M": _fmt("{:+.2f}M"),
                  "d_params_%": _fmt("{:+.1f}%"), "d_GMACs": _fmt("{:+.3f}"), "d_GMACs_%": _fmt("{:+.1f}%")}
    print(df[cols].to_string(index=False, formatters=formatters, na_rep=""))
    print("\nGMACs: multiply-accumulates per image at the default input size (the LR-Net paper's 'FLOPs').")
    print("d_*: overhead of a context-module model over its plain conv counterpart (e.g. resnet26_glore over "
          "resnet26).")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo with parameters and GMACs",
                       description="List registered models with their spatial operator, kernel size, parameter "
                                   "count and multiply-accumulates at the default input size.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'lrnet*'")
    p.add_argument("--kernel-size", type=int, default=None, help="show the models built with this k")
    p.add_argument("--long", action="store_true", help="add a description column")
    p.set_defaults(func=run)
