"""``quality score``: score a corpus once (on GPUs), cut it later (``prepare --quality-scores``).

Embedding every file with an LM is the expensive part of phi-1's filter (about 100 node-days for
35M files on 2 CPU cores); choosing the cut is cheap and is redone many times. So scoring is its own
resumable, sharded job, and every later ``prepare`` or ``quality threshold`` only reads its output.

Shards are ``prepare``'s own (:func:`phi_hpc.data.plan.plan_shards`): array element ``i`` of
``submit quality-score`` and ``quality score --shard i`` mean the same files. Each shard writes
``OUT/shard-NNNNN.npz`` under a temporary name and renames it when complete, so a killed element is
simply rerun and finished shards are skipped. ``OUT/plan.json`` holds the fingerprint (model content,
input files, reader settings): a folder scored with another model or other inputs is refused.

A shard file holds, per document in input order: ``ids`` (the document's origin, ``file`` or
``file:line``), ``digests`` (first 16 bytes of the text's SHA-256, what prepare looks scores up by:
a score is a function of the text, so the lookup does not depend on how paths were spelled),
``scores`` (float64, the classifier's probability or 0-10 grade), ``tokens`` (with EOS, as prepare
counts them; -1 without ``--tokenizer``) and ``bytes``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.fileio import atomic_write, sha256_file, write_json
from phi_hpc.quality.lm_embedder import RuntimeOptions

FORMAT = "phi-hpc-quality-scores/1"
_BATCH = 256


@dataclass(frozen=True)
class ScoreConfig:
    inputs: tuple[str, ...]
    model: str
    output_dir: str
    tokenizer: str | None = None
    glob: str = "**/*.py"
    text_key: str = "text"
    shard_mb: float = 8.0
    eos_token: str = "<|endoftext|>"
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UsageError("no inputs to score", "pass INPUT... (files, folders, .jsonl, .parquet)")
        if self.shard_mb <= 0:
            raise UsageError(f"--shard-mb {self.shard_mb} must be > 0")


@dataclass(frozen=True)
class ScoreRun:
    config: ScoreConfig
    shards: list  # phi_hpc.data.plan.Shard
    fingerprint: str
    out: Path

    def shard_path(self, index: int) -> Path:
        return self.out / f"shard-{index:05d}.npz"


def _prepare_config(config: ScoreConfig):
    from phi_hpc.data.config import PrepareConfig

    return PrepareConfig(
        inputs=list(config.inputs), glob=config.glob, text_key=config.text_key, shard_mb=config.shard_mb
    )


def open_scoring(config: ScoreConfig) -> ScoreRun:
    """Plan the shards and check (or write) ``OUT/plan.json``."""
    from phi_hpc.data.plan import plan_shards
    from phi_hpc.data.sources import file_fingerprint

    if not Path(config.model).is_file():
        raise UsageError(
            f"quality model {config.model} does not exist",
            "train one with: phi-hpc quality train LABELS.jsonl -o model.npz",
        )
    shards = plan_shards(_prepare_config(config))
    if not shards:
        raise UsageError("the inputs contain no documents to score", f"check the paths and --glob {config.glob!r}")
    identity = {
        "format": FORMAT,
        "model_sha256": sha256_file(config.model),
        "glob": config.glob,
        "text_key": config.text_key,
        "shard_mb": config.shard_mb,
        "tokenizer_sha256": sha256_file(_tokenizer_file(config.tokenizer)) if config.tokenizer else None,
        "inputs": [{**file_fingerprint(f), "start": f.start, "end": f.end} for s in shards for f in s.files],
    }
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    out = Path(config.output_dir)
    plan = out / "plan.json"
    if plan.is_file():
        recorded = json.loads(plan.read_text()).get("fingerprint")
        if recorded != fingerprint:
            raise UsageError(
                f"{out} holds scores of another model, tokenizer or inputs (fingerprint {recorded[:12]})",
                "score into a new folder, or delete that one",
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(
            plan,
            {
                "format": FORMAT,
                "fingerprint": fingerprint,
                "model": str(config.model),
                "model_sha256": identity["model_sha256"],
                "shards": len(shards),
                "inputs": list(config.inputs),
            },
        )
    return ScoreRun(config, shards, fingerprint, out)


def _tokenizer_file(path: str) -> str:
    from phi_hpc.data.tokenize import resolve_tokenizer_path

    return str(resolve_tokenizer_path(path))


def score_shard(run: ScoreRun, index: int) -> dict:
    """Score one shard (skipped when its file exists); returns its counts."""
    from phi_hpc.data.sources import read_documents

    if not 0 <= index < len(run.shards):
        raise UsageError(
            f"--shard {index}: the plan has {len(run.shards)} shards (0..{len(run.shards) - 1})",
            "see phi-hpc quality score ... --stage plan",
        )
    path = run.shard_path(index)
    if path.is_file():
        return {"shard": index, "skipped": True}
    config = run.config
    scorer = _scorer(config.model, config.runtime)
    encoder = _encoder(config) if config.tokenizer else None
    bad: list = []
    ids, digests, scores, tokens, sizes = [], [], [], [], []
    batch: list = []

    def flush() -> None:
        texts = [d.text for d in batch]
        encoded = [t.encode("utf-8") for t in texts]
        ids.extend(d.origin for d in batch)
        digests.extend(hashlib.sha256(e).digest()[:16] for e in encoded)
        sizes.extend(len(e) for e in encoded)
        scores.extend(scorer.score(texts).tolist())
        if encoder is not None:
            tokens.extend(len(t) for t in encoder.encode(texts))
        else:
            tokens.extend([-1] * len(texts))
        batch.clear()

    for source in run.shards[index].files:
        for document in read_documents(source, config.text_key, bad.append):
            batch.append(document)
            if len(batch) >= _BATCH:
                flush()
    if batch:
        flush()
    _fault_point(index)
    with atomic_write(path, "wb", encoding=None) as handle:
        np.savez(
            handle,
            ids=np.array(ids, dtype=np.str_),
            scores=np.array(scores, dtype=np.float64),
            digests=np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 16),
            tokens=np.array(tokens, dtype=np.int64),
            bytes=np.array(sizes, dtype=np.int64),
        )
    return {"shard": index, "skipped": False, "documents": len(ids), "bad": [b.to_dict() for b in bad]}


def _fault_point(index: int) -> None:
    """``PHI_HPC_FAULT=kill-in-score-shard:N`` SIGKILLs this process after scoring shard N and before
    writing it (the resume test's power cut)."""
    from phi_hpc.train.checkpoint import die_now, fault_step

    if fault_step("kill-in-score-shard") == index:
        die_now()


def _scorer(model: str, runtime: RuntimeOptions):
    from phi_hpc.quality.classifier import cached_scorer

    return cached_scorer(str(model), os.stat(model).st_mtime_ns, runtime)


def _encoder(config: ScoreConfig):
    from phi_hpc.data.tokenize import DocumentEncoder, describe_tokenizer

    info = describe_tokenizer(config.tokenizer, config.eos_token)
    return DocumentEncoder.cached(config.tokenizer, info.eos_id)


def finish_if_complete(run: ScoreRun) -> dict | None:
    """Write ``OUT/summary.json`` once every shard is scored (any invocation may be the last)."""
    if not all(run.shard_path(s.index).is_file() for s in run.shards):
        return None
    table = load_scores(run.out)
    summary = {
        "format": FORMAT,
        "fingerprint": run.fingerprint,
        "model": run.config.model,
        "shards": len(run.shards),
        "documents": int(len(table.scores)),
        "tokens": int(table.tokens.sum()) if table.has_tokens else None,
        "bytes": int(table.bytes.sum()),
        "runtime": asdict(run.config.runtime),
        "score_quantiles": {
            str(q): float(np.quantile(table.scores, q)) if len(table.scores) else None for q in (0.1, 0.5, 0.83, 0.9)
        },
    }
    write_json(run.out / "summary.json", summary)
    return summary


# -- reading scores ------------------------------------------------------------------------------


@dataclass
class ScoreTable:
    """Every scored document of a scores folder, in shard order."""

    ids: np.ndarray
    digests: np.ndarray  # uint8[N, 16]
    scores: np.ndarray
    tokens: np.ndarray  # -1 where unknown
    bytes: np.ndarray

    @property
    def has_tokens(self) -> bool:
        return bool(len(self.tokens)) and bool((self.tokens >= 0).all())


def load_scores(folder: str | os.PathLike) -> ScoreTable:
    folder = Path(folder)
    plan = folder / "plan.json"
    if not plan.is_file():
        raise UsageError(
            f"{folder} is not a quality scores folder (no plan.json)",
            "create it with: phi-hpc quality score INPUT... --model MODEL.npz -o DIR",
        )
    shards = json.loads(plan.read_text())["shards"]
    missing = [i for i in range(shards) if not (folder / f"shard-{i:05d}.npz").is_file()]
    if missing:
        raise PhiError(
            f"{folder}: {len(missing)} of {shards} shards not scored yet (first: {missing[0]})",
            "rerun quality score (finished shards are skipped)",
        )
    parts = {k: [] for k in ("ids", "digests", "scores", "tokens", "bytes")}
    for i in range(shards):
        with np.load(folder / f"shard-{i:05d}.npz", allow_pickle=False) as data:
            for key in parts:
                parts[key].append(data[key])
    return ScoreTable(**{k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()})


class ScoreLookup:
    """digest -> score, for prepare's filter: sorted 64-bit keys and a binary search (35M documents
    fit in ~600 MB, shared read-only by every worker of a node), the other 8 bytes checked."""

    def __init__(self, table: ScoreTable):
        digests = np.ascontiguousarray(table.digests).view(np.uint64).reshape(-1, 2)
        order = np.argsort(digests[:, 0], kind="stable")
        self._high = digests[order, 0]
        self._low = digests[order, 1]
        self._scores = table.scores[order]

    def __len__(self) -> int:
        return len(self._scores)

    def get(self, digest: bytes) -> float | None:
        high, low = np.frombuffer(digest, dtype=np.uint64)
        i = int(np.searchsorted(self._high, high))
        while i < len(self._high) and self._high[i] == high:
            if self._low[i] == low:
                return float(self._scores[i])
            i += 1
        return None
