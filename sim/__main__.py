"""``python -m sim [overrides]``: one experiment; ``python -m sim -m ...``: a Hydra multirun."""

from sim.cli import main

if __name__ == "__main__":
    main()
