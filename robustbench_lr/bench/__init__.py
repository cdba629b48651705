"""Benchmarks, run as `python -m robustbench_lr.bench NAME [options]`.

Each benchmark measures its figures side by side in one process and prints ratios with the shapes and
the device. Names map to modules of this package with a `main(argv) -> int`.
"""

BENCHES: dict[str, str] = {
    "layer": "robustbench_lr.bench.layer",
    "deform": "robustbench_lr.bench.deform",
    "sweep": "robustbench_lr.bench.sweep",
    "attack": "robustbench_lr.bench.attack",
    "profile": "robustbench_lr.bench.profile",
    "minnorm": "robustbench_lr.bench.minnorm",
    "train": "robustbench_lr.bench.train",
}
