"""The package's layout rules, checked on the source with `ast` (no imports executed), and the README's example."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "robustbench_lr"
README = Path(__file__).resolve().parents[1] / "README.md"
MAX_LINES, MAX_FUNCTION = 400, 60


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (top level and inside functions), relative imports resolved."""
    tree = ast.parse(path.read_text())
    here = _dotted(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def _in(pkg: str) -> list[Path]:
    return [p for p in _modules() if _dotted(p) == f"robustbench_lr.{pkg}" or
            _dotted(p).startswith(f"robustbench_lr.{pkg}.")]


NEVERS = [
    ("layers", ("models", "runners", "cli")),
    ("models", ("attacks", "runners", "report")),
    ("report", ("training", "checkpoint")),
    ("results", ("runners", "cli", "report", "training")),
    ("attacks", ("layers.normalize", "runners", "cli", "report")),
]


@pytest.mark.parametrize("room,forbidden", NEVERS, ids=[r for r, _ in NEVERS])
def test_the_nevers_hold(room, forbidden):
    bad = []
    for path in _in(room):
        for mod in imports_of(path):
            if any(mod == f"robustbench_lr.{f}" or mod.startswith(f"robustbench_lr.{f}.") for f in forbidden):
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert not bad, bad


def test_the_import_walker_sees_relative_and_lazy_imports(tmp_path):
    assert "robustbench_lr.models" in imports_of(PKG / "checkpoint.py")  # a lazy import inside load_model
    assert "robustbench_lr.results.stats" in imports_of(PKG / "runners" / "hygiene.py")


WRITERS = {"open", "atomic_write", "write_json_atomic", "write_csv_atomic", "write_text_atomic", "to_csv", "savefig",
           "save_file", "write_run", "write_figures", "mkdir", "write_text", "write_bytes", "save_checkpoint", "dump",
           "savez", "savez_compressed", "touch", "rename", "unlink", "rmtree", "copyfile", "imwrite"}
OWNED = {("torch", "save"), ("np", "save"), ("numpy", "save"), ("os", "replace"), ("os", "remove")}  # not Store.save


def writer_calls(src: str) -> list[str]:
    """'line: name' for every call in `src` that writes (or moves, or deletes) a file."""
    out = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        if name in WRITERS or (owner, name) in OWNED:
            out.append(f"{node.lineno}: {name}")
    return out


def test_the_writer_check_sees_writes():
    src = ("import os, json, torch\nopen('f', 'w')\njson.dump({}, fh)\ntorch.save(m, 'p')\nos.replace('a', 'b')\n"
           "store.save('k', {})\n'text'.replace('a', 'b')\nPath('x').write_text('y')\n")
    assert [c.split(": ")[1] for c in writer_calls(src)] == ["open", "dump", "save", "replace", "write_text"]


def test_runners_never_write_files():
    checked = {p.name for p in _in("runners")}
    assert {"deform.py", "deform_sweep.py", "evaluate.py", "eps_sweep.py"} <= checked, checked
    bad = [f"{path.relative_to(PKG)}:{c}" for path in _in("runners") for c in writer_calls(path.read_text())]
    assert not bad, bad


def test_attacks_never_normalise():
    for path in _in("attacks"):
        src = path.read_text()
        assert "InputNormalize" not in src and "set_normalization_used" not in src, path


def test_files_and_functions_stay_small():
    long_files, long_functions = [], []
    for path in _modules():
        src = path.read_text()
        if src.count("\n") > MAX_LINES:
            long_files.append(f"{path.relative_to(PKG)}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    long_functions.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name} ({n} lines)")
    assert not long_files, long_files
    assert not long_functions, long_functions


def test_only_results_knows_the_run_file_names():
    names = ("results.csv", "paired.csv", "hygiene.csv", "outcomes.csv", "run.json", "figures.json")
    bad = [f"{p.relative_to(PKG)}: {n}" for p in _modules() if not _dotted(p).startswith("robustbench_lr.results")
           for n in names if f'"{n}"' in p.read_text()]
    assert not bad, bad


def test_one_did_you_mean():
    bad = [str(p.relative_to(PKG)) for p in _modules() if "get_close_matches" in p.read_text()
           and p.name != "errors.py"]
    assert not bad, bad


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has a Python example"
    for code in blocks:
        if "# not run by the tests" in code:
            continue
        exec(compile(code, "README.md", "exec"), {})


def test_public_api_imports_lazily():
    import subprocess
    import sys

    code = ("import sys, robustbench_lr; assert 'torch' not in sys.modules, 'torch imported at package import'; "
            "from robustbench_lr import create_model, list_models, load_model; print(len(list_models()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) > 10
