"""``python -m locked_targets``: the ``locked-targets`` command."""

from locked_targets.cli import main

main(prog_name="locked-targets")
