"""`python -m robustbench_lr COMMAND ...` (used by torchrun: `torchrun -m robustbench_lr train ...`)."""

from .cli import run

if __name__ == "__main__":
    run()
