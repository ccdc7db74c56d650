"""Read an offline W&B run file (`wandb/offline-run-*/run-<id>.wandb`) the way `wandb sync` does.

wandb 0.31 ships no Python reader (the old `wandb.sdk.internal.datastore` is gone; the Go core reads the
file). The format is LevelDB's log format (32 KiB blocks of records: crc32 uint32, length uint16, type uint8
FULL/FIRST/MIDDLE/LAST) after a 7-byte header `:W&B` + magic 0xBEE1 + version, each record one
`wandb_internal_pb2.Record` protobuf.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B run file"
    out, pos, parts = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left - HEADER
            continue
        chunk, pos = data[pos : pos + length], pos + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            parts = chunk
        elif kind == MIDDLE:
            parts += chunk
        elif kind == LAST:
            out.append(parts + chunk)
    return out


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class RunFile:
    """What one run file holds: the run record, config, history rows and the last summary values."""

    run_id: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(
        default_factory=list
    )  # name, type, files: {path in it: local file}

    def values(self, key: str) -> list[Any]:
        return [row[key] for row in self.history if key in row]

    def table(self, key: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The last logged `wandb.Table` under `key` (offline its cells live in the run's table artifact, staged
        in W&B's data dir until `wandb sync`): its JSON and the artifact's files."""
        name = f"{key}.table.json"
        artifact = next(a for a in reversed(self.artifacts) if name in a["files"])
        return json.loads(Path(artifact["files"][name]).read_text()), artifact["files"]


def read_run(path: Path) -> RunFile:
    from wandb.proto import wandb_internal_pb2 as pb

    run = RunFile()
    for raw in raw_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.group, run.job_type, run.tags = r.run_id, r.run_group, r.job_type, list(r.tags)
        elif kind == "config":
            run.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "artifact":
            a = record.artifact
            files = {e.path: e.local_path for e in a.manifest.contents}
            run.artifacts.append({"name": a.name, "type": a.type, "files": files})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    return run
