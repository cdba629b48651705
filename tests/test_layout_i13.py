"""Layout rule of issue 13, checked on the source with `ast`: attacks do no file I/O (only `results` knows files;
official AutoAttack's resumable state goes through a `results.store` slot)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "robustbench_lr"

# calls that write, read or list files (tests/test_layout.py's WRITERS for runners, plus readers and the rest)
FILE_CALLS = {"open", "atomic_write", "write_json_atomic", "write_csv_atomic", "write_text_atomic", "to_csv",
              "savefig", "save_file", "write_run", "write_figures", "mkdir", "write_text", "write_bytes",
              "save_checkpoint", "read_text", "read_bytes", "load_file", "safe_open", "exists", "is_file", "is_dir",
              "iterdir", "glob", "rglob", "unlink", "rmdir", "makedirs", "rename", "to_disk", "from_disk", "dump",
              "savez", "savez_compressed", "touch", "rmtree", "copyfile", "imwrite"}
OWNED = {("torch", "load"), ("torch", "save"), ("np", "save"), ("np", "load"), ("os", "replace"), ("os", "remove")}
FILE_MODULES = {"pathlib", "shutil", "tempfile", "os.path", "safetensors.torch"}


def _attack_files() -> list[Path]:
    return sorted(p for p in (PKG / "attacks").rglob("*.py") if "__pycache__" not in p.parts)


def file_io_in(path: Path) -> list[str]:
    """Every file call (`name(...)`, `obj.name(...)`, `torch.load`, `os.replace`, ...) and file-module import."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            if name in FILE_CALLS or (owner, name) in OWNED:
                bad.append(f"{path.name}:{node.lineno} calls {name}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad += [f"{path.name}:{node.lineno} imports {m}" for m in mods if m in FILE_MODULES]
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("utils"):
                bad += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names if a.name in FILE_CALLS]
    return bad


def test_attacks_do_no_file_io():
    files = _attack_files()
    assert any(p.name == "autoattack_ref.py" for p in files)
    bad = [b for p in files for b in file_io_in(p)]
    assert not bad, bad


def test_the_check_sees_file_io(tmp_path):
    src = tmp_path / "bad.py"
    src.write_text("import json\nfrom pathlib import Path\nfrom ..utils import write_json_atomic\n"
                   "def f(p):\n    torch.save({}, p)\n    return json.loads(Path(p).read_text())\n")
    found = " ".join(file_io_in(src))
    assert all(w in found for w in ("pathlib", "write_json_atomic", "calls save", "calls read_text")), found

