"""`robustbench-lr models`: the model zoo as a table (parameters and MACs at the default resolution)."""

from __future__ import annotations

import argparse

import pandas as pd

from ..models import create_model, list_models, model_info
from ..models.profile import count_macs, count_params


def zoo_table(pattern: str = "*", kernel_size: int | None = None) -> pd.DataFrame:
    """One row per registered model: name, family, spatial op, k, params, GMACs, input size."""
    rows = []
    names = list_models(pattern)
    base = {}
    for name in names:
        info = model_info(name)
        model = create_model(name, kernel_size=kernel_size)
        k = kernel_size or info.kernel_size
        rows.append({"model": name, "family": info.family, "spatial": info.spatial, "k": k,
                     "params_M": count_params(model) / 1e6, "GMACs": count_macs(model, info.input_size) / 1e9,
                     "input": "x".join(str(v) for v in info.input_size), "classes": info.num_classes,
                     "description": info.description})
        base[name] = rows[-1]
    return pd.DataFrame(rows)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError

    df = zoo_table(args.pattern, args.kernel_size)
    if df.empty:
        raise UserError(f"no model matches {args.pattern!r}; run `robustbench-lr models` for the list.")
    cols = ["model", "family", "spatial", "k", "params_M", "GMACs", "input", "classes"]
    if args.long:
        cols.append("description")
    print(df[cols].to_string(index=False, formatters={"params_M": "{:.2f}M".format, "GMACs": "{:.3f}".format}))
    print("\nGMACs: multiply-accumulates per image at the default input size (the LR-Net paper's 'FLOPs').")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo with parameters and GMACs",
                       description="List registered models with their spatial operator, kernel size, parameter "
                                   "count and multiply-accumulates at the default input size.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'lrnet*'")
    p.add_argument("--kernel-size", type=int, default=None, help="show the models built with this k")
    p.add_argument("--long", action="store_true", help="add a description column")
    p.set_defaults(func=run)
