"""The run-directory contract: the only code that knows the file names of a run.

A run directory (written by `evaluate`, `sweep deform`, `sweep kernel-size`, `demo`) holds

    results.csv    the tidy results table (one row per model, perturbation and strength; counts, CIs, settings)
    paired.csv     exact McNemar tests between models on the same examples
    hygiene.csv    evaluation-hygiene checks (pass / warn / fail)
    outcomes.csv   per example: clean correctness and the smallest eps that fooled it
    summary.csv    (kernel-size sweeps) mean and spread over training seeds
    run.json       the command, configuration, provenance (versions, git commit, device, threads)
    state/         resumable progress (a re-run of the same command resumes from it)
    adv/           adversarial examples (safetensors), with --save-adv
    figures/       the model figures (PNG) and figures.json: per figure its title, caption, model, kind, and the
                   settings that redraw it (example index, attack, norm, eps, steps, seed, layer)
    checkpoints/   (demo, kernel-size sweeps) the models trained for the run, one directory each

Every file is written atomically (temporary file, then rename) with the umask's normal permissions, and every
table is written with its header even when it has no rows, so `pandas.read_csv` opens all of them.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import UserError
from ..utils import atomic_write, write_csv_atomic, write_json_atomic
from .store import FileStore
from .table import TABLES, RunTables, frame

FILES = {"results": "results.csv", "paired": "paired.csv", "hygiene": "hygiene.csv", "outcomes": "outcomes.csv",
         "summary": "summary.csv"}
RUN_JSON = "run.json"
STATE_DIR, ADV_DIR, FIGURES_DIR, FIGURES_JSON = "state", "adv", "figures", "figures.json"
CHECKPOINTS_DIR = "checkpoints"
REPORT_PDF = "report.pdf"


# ------------------------------------------------------------------------------------------------ before any work
def check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Make sure `path` is (or can become) a writable directory, before any work: creates it and writes and removes
    a probe file. On failure removes what it created and raises one clear UserError."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {p} exists and is not a directory; choose another {option}.")
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise UserError(f"{option} {p} cannot be created: {anc} is a file, not a directory.")
    missing = [d for d in [p, *p.parents] if not d.exists()]
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        for d in missing:  # innermost first
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise UserError(f"{option} {p} is not writable ({exc.strerror or exc}); choose another {option}.") from None
    return p


def check_out_file(path: str | os.PathLike, suffixes: tuple[str, ...], option: str = "--out") -> Path:
    """Validate an output file path (extension, parent writable, not a directory) before any work."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise UserError(f"{option} {p}: the file must end in {' or '.join(suffixes)}.")
    if p.is_dir():
        raise UserError(f"{option} {p} is a directory; give a file name such as {p / ('out' + suffixes[0])}.")
    check_out_dir(p.parent if str(p.parent) else Path("."), option)
    return p


def checkpoint_dir(out: str | os.PathLike, name: str) -> Path:
    """The directory of the checkpoint `name` trained by the run in `out` (OUT/checkpoints/NAME)."""
    return Path(out) / CHECKPOINTS_DIR / name


def store_for(out: str | os.PathLike) -> FileStore:
    """The resumable store of a run directory."""
    return FileStore(Path(out) / STATE_DIR)


# ------------------------------------------------------------------------------------------------ writing
def write_run(out: str | os.PathLike, tables: RunTables, meta: dict[str, Any],
              extra: dict[str, pd.DataFrame] | None = None) -> list[str]:
    """Write the tables (each with its header, even when empty) and run.json; returns the file names written."""
    from ..provenance import provenance

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in [*tables.items(), *(extra or {}).items()]:
        write_csv_atomic(df, out / FILES.get(name, f"{name}.csv"))
        written.append(FILES.get(name, f"{name}.csv"))
    device = meta.get("device", "cpu")
    write_json_atomic(out / RUN_JSON, {**meta, **{k: v for k, v in provenance(device).items() if k not in meta}})
    return [*written, RUN_JSON]


def write_figures(out: str | os.PathLike, items: list[dict[str, Any]], dpi: int = 130) -> list[dict[str, str]]:
    """Write figure items {'file', 'title', 'caption', 'figure', ...} as PNGs into OUT/figures/, and figures.json
    with every field of each item but the Figure (e.g. model, kind, index, fooled, attack, norm, eps, steps, seed,
    layer: what `visualize --run` reads back)."""
    folder = Path(out) / FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for it in items:
        atomic_write(folder / it["file"], lambda fh, fig=it["figure"]: fig.savefig(fh, format="png", dpi=dpi),
                     mode="wb")
        manifest.append({k: str(it[k]) for k in ("file", "title", "caption")} | {
            k: it[k] for k in it if k not in ("file", "title", "caption", "figure")})
    write_json_atomic(folder / FIGURES_JSON, manifest)
    return manifest


class AdvSaver:
    """Collects fooled examples per (model, attack, eps) and writes adv/<model>__<attack>__eps<eps>.safetensors."""

    def __init__(self, out: str | os.PathLike, suffix: str = "") -> None:
        self.root, self.suffix = Path(out) / ADV_DIR, suffix
        self.key: tuple[str, str, float] | None = None
        self.idx: list[np.ndarray] = []
        self.img: list[torch.Tensor] = []

    def __call__(self, label: str, attack: str, eps: float, indices: np.ndarray, images: torch.Tensor) -> None:
        key = (label, attack, float(eps))
        if key != self.key:
            self.flush()
            self.key = key
        self.idx.append(np.asarray(indices))
        self.img.append(images)

    def flush(self) -> None:
        if self.key is None or not self.idx:
            self.key, self.idx, self.img = None, [], []
            return
        from safetensors.torch import save

        label, attack, eps = self.key
        blob = save({"dataset_index": torch.from_numpy(np.concatenate(self.idx).astype(np.int64)),
                     "images": torch.cat(self.img).contiguous()}, metadata={"model": label, "attack": attack,
                                                                            "eps": repr(eps)})
        atomic_write(self.root / f"{label}__{attack}__eps{eps:g}{self.suffix}.safetensors",
                     lambda fh: fh.write(blob), mode="wb")
        self.key, self.idx, self.img = None, [], []


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class RunBundle:
    """Everything read back from one or more run directories."""

    results: pd.DataFrame
    paired: pd.DataFrame
    hygiene: pd.DataFrame
    outcomes: pd.DataFrame
    runs: list[dict[str, Any]]
    figures: list[dict[str, Any]] = field(default_factory=list)  # manifest entries with 'path' added
    dirs: list[Path] = field(default_factory=list)


def read_table(path: Path, table: str | None = None) -> pd.DataFrame:
    """A table of a run directory; a missing or empty file (older runs wrote bare newlines) is an empty table."""
    empty = frame([], table) if table in TABLES else pd.DataFrame()
    if not path.is_file() or path.stat().st_size == 0:
        return empty
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return empty


def load_runs(run_dirs: list[str | os.PathLike]) -> RunBundle:
    """Read and concatenate the tables of several run directories (a missing directory is a UserError)."""
    parts: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
    runs, figs, dirs = [], [], []
    for d in run_dirs:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise UserError(f"run directory {p} does not exist.")
        if not (p / FILES["results"]).is_file():
            raise UserError(f"{p} has no {FILES['results']}: give directories written by `robustbench-lr evaluate`, "
                            f"`sweep` or `demo`.")
        dirs.append(p)
        for t in TABLES:
            parts[t].append(read_table(p / FILES[t], t))
        if (p / RUN_JSON).is_file():
            try:
                runs.append(json.loads((p / RUN_JSON).read_text()))
            except json.JSONDecodeError as exc:
                raise UserError(f"{p / RUN_JSON} is not valid JSON ({exc}).") from None
        figs += _read_figures(p / FIGURES_DIR)
    cat = {t: pd.concat([x for x in xs if not x.empty], ignore_index=True) if any(not x.empty for x in xs)
           else frame([], t) for t, xs in parts.items()}
    if cat["results"].empty:
        raise UserError("the run directories hold no results rows.")
    return RunBundle(cat["results"], cat["paired"], cat["hygiene"], cat["outcomes"], runs, figs, dirs)


def _read_figures(folder: Path) -> list[dict[str, Any]]:
    manifest = folder / FIGURES_JSON
    if not manifest.is_file():
        return []
    out = []
    for f in json.loads(manifest.read_text()):
        if (folder / f["file"]).is_file():
            out.append({**f, "path": folder / f["file"]})
    return out

