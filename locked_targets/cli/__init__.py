"""The ``locked-targets`` command: who holds which lock, since when, who waits; breaking a dead
holder's lock; checking that a Redis and a cache are fit for locking (``doctor``).

The top of the gokart face: it reads the library's configuration and builds on the lock
core's ``inspection``. ``finding`` picks the locks a command looks at, ``report`` says what
is wrong and writes the ``--json`` documents, ``tables`` draws them for people,
``doctor`` checks a set-up, and ``commands`` holds the click commands.
"""

from locked_targets.cli.commands import main

__all__ = ["main"]
