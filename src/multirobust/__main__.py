"""``python -m multirobust``: the command line, e.g. under ``torchrun -m multirobust train``."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="multirobust")
