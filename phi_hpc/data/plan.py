"""The plan stage of ``prepare``: which shards there are, and the run every other stage works in.

``prepare`` runs as plan -> map (per shard) -> reduce (whole corpus) -> pack; see
:mod:`phi_hpc.data.pipeline` for the whole chain. Planning is cheap and deterministic, so every
stage (and every Slurm array element) plans again and gets the same :class:`RunContext`: the
shards, the tokenizer, the filter source and the run's fingerprint, which keys its work folder.

The fingerprint covers (config, tokenizer, input files, what the filters read): change any of them
and stale intermediate state is discarded, not reused. Fields that change how a run executes but
never what it writes (:data:`RUNTIME_FIELDS`) stay out of it, so outputs are identical whatever the
worker count.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phi_hpc.config import to_dict
from phi_hpc.data.config import PrepareConfig
from phi_hpc.data.filters import FilterSource, NoFilters, filters_requested
from phi_hpc.data.layout import Layout
from phi_hpc.data.sources import InputFile, expand_inputs, file_fingerprint, split_input
from phi_hpc.errors import UsageError
from phi_hpc.fileio import write_json

if TYPE_CHECKING:
    from phi_hpc.data.tokenize import TokenizerInfo

# The work folder's format, part of every run's fingerprint: a work folder written by another format (2: map
# summaries hold one `filter_notes` list) lives under another name, so a resume never reads it.
FORMAT = "phi-hpc-prepare/2"
RUNTIME_FIELDS = ("workers", "strict", "keep_work", "output_dir", "tokenizer_backend")


@dataclass(frozen=True)
class Shard:
    index: int
    files: tuple[InputFile, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def plan_shards(config: PrepareConfig) -> list[Shard]:
    """Split the inputs into map shards of about ``shard_mb`` megabytes, in input order: loose source
    files are grouped; each data file (.jsonl*, .parquet) is its own shard, or several when it is
    big and can be read from the middle (plain .jsonl by byte range, .parquet by row group)."""
    limit = config.shard_mb * 1e6
    files = [
        piece for source in expand_inputs(list(config.inputs), config.glob) for piece in split_input(source, int(limit))
    ]
    groups: list[list[InputFile]] = []
    current: list[InputFile] = []
    size = 0
    for source in files:
        if source.kind != "source":
            if current:
                groups.append(current)
                current, size = [], 0
            groups.append([source])
            continue
        if current and size + source.size > limit:
            groups.append(current)
            current, size = [], 0
        current.append(source)
        size += source.size
    if current:
        groups.append(current)
    return [Shard(i, tuple(group)) for i, group in enumerate(groups)]


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """One planned run: what every stage needs besides its own files. Read-only, so forked map
    workers share it (see :mod:`phi_hpc.data.executor`)."""

    config: PrepareConfig
    layout: Layout
    shards: list[Shard]
    tokenizer: TokenizerInfo
    fingerprint: str
    filters: FilterSource = field(default_factory=NoFilters)


def recorded_config(config: PrepareConfig) -> dict:
    """The config as the fingerprint and the manifest record it (without :data:`RUNTIME_FIELDS`)."""
    data = to_dict(config)
    for name in RUNTIME_FIELDS:
        data.pop(name, None)
    return data


def open_run(config: PrepareConfig, filters: FilterSource | None = None) -> RunContext:
    """Validate the tokenizer and inputs, plan shards, and record the plan in this run's work folder.

    ``filters``: where the map stage gets its document filters (none when not given)."""
    from phi_hpc.data.tokenize import describe_tokenizer

    filters = filters if filters is not None else NoFilters()
    if not config.output_dir:
        raise UsageError("no output folder given", "pass -o OUT_DIR")
    tokenizer = describe_tokenizer(config.tokenizer, config.eos_token)
    shards = plan_shards(config)
    identity = {
        "format": FORMAT,
        "config": recorded_config(config),
        "tokenizer_sha256": tokenizer.sha256,
        **({"rensa": _rensa_or_error()} if config.dedup.minhash == "rensa" else {}),
        "inputs": [{**file_fingerprint(f), "start": f.start, "end": f.end} for shard in shards for f in shard.files],
    }
    if filters_requested(config):
        identity["filter_inputs"] = filters.content_hashes(config)  # by content, not path
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    layout = Layout(Path(config.output_dir).absolute(), fingerprint[:16])
    if not layout.plan.is_file():
        write_json(
            layout.plan,
            {"fingerprint": fingerprint, "shards": [[[f.path, f.start, f.end] for f in s.files] for s in shards]},
        )
    return RunContext(
        config=config, layout=layout, shards=shards, tokenizer=tokenizer, fingerprint=fingerprint, filters=filters
    )


def _rensa_or_error() -> str:
    """rensa's versions, part of the run's identity (an upgrade may change its signatures)."""
    from phi_hpc.data.minhash import rensa_version

    found = rensa_version()
    if found is None:
        raise UsageError(
            "dedup.minhash=rensa but the rensa package is not installed",
            "pip install rensa==0.5.0, or --set dedup.minhash=numpy (the built-in MinHash)",
        )
    return found
