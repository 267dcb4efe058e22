"""A runnable demonstration: several applications share one gokart cache through locked_targets.

``python -m demo`` (or ``make demo``) starts a private redis-server, runs the pipeline of
``demo.pipeline`` in several concurrent application processes (``demo.app``) on one
cache directory, with the run lock and the target lock, and prints, per application, the
tasks it computed and those it skipped because another application computed them, and,
per task, how often it was computed, how often its output was written, and whether every
load of it was whole. ``python -m demo --unlocked`` runs the same on gokart's own targets,
without Redis or locked_targets, to show what the locks prevent.
"""
