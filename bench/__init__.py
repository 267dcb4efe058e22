"""Benchmark of LockedTarget and its run lock against unlocked gokart and gokart's locks (``make bench``)."""
