"""Stable assignment of streams to daemons sharing one broker: ``--shard K/N``."""

from __future__ import annotations

import zlib


def shard_of(stream_id: str, n: int) -> int:
    """CRC-32 of the id modulo ``n``: stable across processes, machines and Python versions."""
    return zlib.crc32(stream_id.encode("utf-8")) % n


def owns(stream_id: str, k: int, n: int) -> bool:
    return n == 1 or shard_of(stream_id, n) == k
