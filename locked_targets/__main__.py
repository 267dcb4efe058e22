"""``python -m locked_targets``: the ``locked-targets`` command."""

from locked_targets.cli import main

if __name__ == "__main__":  # importing the module (as the tests do) runs nothing
    main(prog_name="locked-targets")
