"""Benchmark of LockedTarget against unlocked gokart targets and gokart's own Redis lock (``make bench``)."""
