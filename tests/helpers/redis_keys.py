"""Checks on the lock keys a test leaves behind in Redis."""

from __future__ import annotations

import redis


def keys_without_ttl(client: redis.Redis, prefix: str) -> list[bytes]:
    """Lock keys under ``prefix`` that would never expire: must always be empty."""
    # -1: the key exists and has no TTL (-2, gone since the scan saw it, is fine: releases
    # are sent in the background and may delete it meanwhile).
    return [key for key in client.scan_iter(match=f"{prefix}*") if client.pttl(key) == -1]
