"""The ``slpt`` command: the product's commands (app/cli.py) and the lab's beside them (bench/cli.py, sim/cli.py)."""
