"""Helpers shared by the tests: entry points for spawned processes, the test pipeline, object stores."""
