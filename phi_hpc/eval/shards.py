"""The shard files of ``eval run``: how ranks hand their completions to rank 0 without collectives.

Rank ``r`` of ``N`` writes its completions to ``OUT_DIR/.shards/rank-<r>-of-<N>.jsonl``; rank 0 waits
for every shard and merges them. Files instead of a process group mean no rendezvous port and no NCCL
for what is an embarrassingly parallel job, and a requeued job reuses the shards that already finished.
Each shard's first line carries a fingerprint of model + data + decoding settings + world size, so a
stale shard is never mixed in. Everything about the shard files (name, format, staleness, waiting)
lives here; :mod:`phi_hpc.eval.run` only decides who writes and who merges.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

from phi_hpc.errors import PhiError
from phi_hpc.eval.config import EvalRunConfig
from phi_hpc.eval.model_source import ResolvedModel
from phi_hpc.fileio import atomic_write

SHARD_DIR = ".shards"


def fingerprint(config: EvalRunConfig, model: ResolvedModel, world_size: int) -> str:
    """What a shard's completions depend on; a shard with another fingerprint is stale."""
    weights = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in model.model_dir.iterdir()
        if p.suffix in (".safetensors", ".bin", ".json")
    )
    decoding = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in ("output_dir", "workers", "isolation", "ks", "merge_timeout_s", "checkpoint", "hf_model")
    }
    blob = json.dumps(
        {"model": str(model.model_dir.resolve()), "weights": weights, "decoding": decoding, "world_size": world_size},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def shard_path(out_dir: Path, rank: int, world_size: int) -> Path:
    return out_dir / SHARD_DIR / f"rank-{rank:05d}-of-{world_size:05d}.jsonl"


def read_shard(path: Path, expected_fingerprint: str) -> list[dict] | None:
    """The shard's records, or None if it is missing or was made by a different setup."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        header = json.loads(handle.readline() or "{}")
        if header.get("fingerprint") != expected_fingerprint:
            return None
        return [json.loads(line) for line in handle if line.strip()]


def write_shard(path: Path, fingerprint_value: str, records: list[dict]) -> None:
    with atomic_write(path) as handle:
        handle.write(json.dumps({"fingerprint": fingerprint_value, "records": len(records)}) + "\n")
        for record in records:
            handle.write(json.dumps(record) + "\n")


def wait_for_shards(
    out_dir: Path, world_size: int, fingerprint_value: str, timeout_s: float, poll_s: float = 1.0
) -> list[dict]:
    """Rank 0: block until every rank's shard is on disk, then return all records."""
    deadline = time.monotonic() + timeout_s
    records: dict[int, list[dict]] = {}
    while True:
        for rank in range(world_size):
            if rank not in records:
                found = read_shard(shard_path(out_dir, rank, world_size), fingerprint_value)
                if found is not None:
                    records[rank] = found
        if len(records) == world_size:
            return [r for rank in range(world_size) for r in records[rank]]
        if time.monotonic() > deadline:
            missing = sorted(set(range(world_size)) - set(records))
            raise PhiError(
                f"ranks {missing} did not write their shard within {timeout_s:.0f}s",
                f"check their logs; finished shards in {out_dir / SHARD_DIR} are reused on rerun",
            )
        time.sleep(poll_s)
