"""The records of a W&B offline run file (``run-<id>.wandb``), for tests that check what W&B will upload.

wandb 0.31 has no Python reader of its own run file (its core is in Go), so this one is written by hand: a
7-byte header (``:W&B``, magic, version), then LevelDB's log format, 32 KiB blocks of chunks with a 7-byte
header each (CRC, length, type FULL/FIRST/MIDDLE/LAST), each whole record a ``wandb_internal_pb2.Record``.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, FILE_HEADER, CHUNK_HEADER = 32768, 7, 7
FULL, FIRST, LAST = 1, 2, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, buf = FILE_HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if kind == 0 and length == 0:
            break
        chunk, pos = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length], pos + CHUNK_HEADER + length
        buf = chunk if kind in (FULL, FIRST) else buf + chunk
        if kind in (FULL, LAST):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            yield rec


def exit_code(run_dir: Path) -> int:
    """The exit code a finished offline run was closed with (one ``exit`` record in its run file)."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    codes = [r.exit.exit_code for r in records(path) if r.WhichOneof("record_type") == "exit"]
    assert len(codes) == 1, f"{path}: {len(codes)} exit records"
    return codes[0]


def config(run_dir: Path) -> dict:
    """The config an offline run will upload: its start's values, each later update applied in order."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    out: dict = {}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        items = rec.run.config.update if kind == "run" else rec.config.update if kind == "config" else ()
        out.update({item.key: json.loads(item.value_json) for item in items})
    return out
