"""Results: the tidy tables, their statistics, resumable progress and the run-directory files.

- `table`: `Row`, `collect(rows) -> RunTables`, `finalize`, the schemas of every table, paired tests derived
  from per-example outcomes, terminal summaries;
- `stats`: Clopper-Pearson intervals, exact McNemar tests, t-intervals over draws or seeds;
- `store`: `MemoryStore` / `FileStore`, where runners keep finished cells so a re-run resumes;
- `rundir`: the only code that knows a run directory's file names (`write_run`, `load_runs`, `check_out_dir`).
"""

from .rundir import (AdvSaver, RunBundle, check_out_dir, check_out_file, load_runs, store_for, write_figures,
                     write_run)
from .stats import clopper_pearson, mcnemar_exact, paired_comparisons, t_interval
from .store import FileStore, MemoryStore, Store
from .table import (COLUMNS, FIRST, Row, RunTables, collect, concat, finalize, fmt_strength, frame, kernel_summary,
                    model_columns, summary_table, training_label)

__all__ = ["AdvSaver", "COLUMNS", "FIRST", "FileStore", "MemoryStore", "Row", "RunBundle", "RunTables", "Store",
           "check_out_dir", "check_out_file", "clopper_pearson", "collect", "concat", "finalize", "fmt_strength",
           "frame", "kernel_summary", "load_runs", "mcnemar_exact", "model_columns", "paired_comparisons",
           "store_for", "summary_table", "t_interval", "training_label", "write_figures", "write_run"]
