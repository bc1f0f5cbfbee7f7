"""The reduce stage of ``prepare``: exact and near-duplicate clustering over the whole corpus.

It is the one stage that sees every document at once, so its memory is what has to fit on one
node at The Stack's scale (35M documents). It therefore never holds a per-document Python object
or a whole-corpus copy of the map outputs: it streams the shards' arrays once per use and keeps a
few numpy arrays of one to eight bytes per document (eligible, survivors, similarity, keep):

* exact dedup: the 16-byte digests, concatenated, sorted once, then dropped;
* near dedup: one LSH band at a time (8 bytes per document and its sort), candidate pairs only;
  full signatures are memory-mapped and read for candidate pairs only;
* the audit: document names (``file:line``) are read back from each shard's summary only for the
  documents it mentions (removed ones, their survivors, flagged ones).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from phi_hpc.data.filters import FILTERED, FLAGGED, FilterNote, audit_order, count_by_filter
from phi_hpc.data.layout import remove_stale_temporaries
from phi_hpc.data.plan import RunContext
from phi_hpc.errors import PhiError
from phi_hpc.fileio import atomic_write, write_json


@dataclass(kw_only=True)
class CorpusIndex:
    """What the stages after map need about the whole corpus (cut to ``max_documents``)."""

    shard_start: np.ndarray  # global index of each shard's first document
    shard_documents: np.ndarray  # documents of each shard (after the cut)
    eligible: np.ndarray  # bool: tokenized, i.e. not dropped by a filter
    bad: list[dict]
    notes: list[FilterNote]  # the filters' drops, flags and scores, with global document indices
    input_bytes: int

    @property
    def size(self) -> int:
        return int(self.shard_documents.sum())

    def shard_of(self, indices: np.ndarray) -> np.ndarray:
        """Which shard holds each global document index (the last shard starting at or before it:
        an empty shard shares its start with the next one)."""
        return np.searchsorted(self.shard_start, indices, side="right") - 1


def _shard_summary(context: RunContext, shard_index: int) -> dict:
    return json.loads(context.layout.shard_done(shard_index).read_text())


def load_index(context: RunContext) -> CorpusIndex:
    layout = context.layout
    missing = [s.index for s in context.shards if not layout.shard_done(s.index).is_file()]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise PhiError(
            f"map stage incomplete: {len(missing)} of {len(context.shards)} shards missing ({shown})",
            "run --stage map for those shards (or --stage all)",
        )
    remaining = context.config.max_documents
    starts, counts, eligible, bad, notes = [], [], [], [], []
    offset = input_bytes = 0
    for shard in context.shards:
        meta = _shard_summary(context, shard.index)
        count = meta["documents"] if remaining is None else min(meta["documents"], remaining)
        if remaining is not None:
            remaining -= count
        starts.append(offset)
        counts.append(count)
        bad.extend(meta["bad"])
        notes.extend(
            FilterNote(**{**n, "document": n["document"] + offset})
            for n in meta["filter_notes"]
            if n["document"] < count
        )
        input_bytes += meta["input_bytes"]
        with np.load(layout.shard_arrays(shard.index)) as data:
            eligible.append(data["token_rows"][:count] >= 0)
        offset += count
    return CorpusIndex(
        shard_start=np.asarray(starts, dtype=np.int64),
        shard_documents=np.asarray(counts, dtype=np.int64),
        eligible=np.concatenate(eligible) if eligible else np.zeros(0, bool),
        bad=bad,
        notes=notes,
        input_bytes=input_bytes,
    )


def shard_arrays(context: RunContext, index: CorpusIndex, key: str) -> Iterator[np.ndarray]:
    """One map output array (``digests``, ``band_keys``, ``tokens``...) shard by shard, cut."""
    for shard, count in zip(context.shards, index.shard_documents.tolist()):
        with np.load(context.layout.shard_arrays(shard.index)) as data:
            yield data[key][:count]


def corpus_array(context: RunContext, index: CorpusIndex, key: str, shape=(), dtype=np.int64) -> np.ndarray:
    parts = list(shard_arrays(context, index, key))
    return np.concatenate(parts) if parts else np.zeros((0, *shape), dtype=dtype)


def _band_columns(context: RunContext, index: CorpusIndex, bands: int) -> Iterator[np.ndarray]:
    for band in range(bands):
        parts = [keys[:, band].copy() for keys in shard_arrays(context, index, "band_keys")]
        yield np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def signature_reader(context: RunContext, index: CorpusIndex):
    """``indices -> uint32[len(indices), num_perm]`` from the shards' memory-mapped signature files."""
    maps = {s.index: np.load(context.layout.shard_signatures(s.index), mmap_mode="r") for s in context.shards}

    def signatures_of(indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), context.config.dedup.num_perm), dtype=np.uint32)
        shards = index.shard_of(indices)
        for shard in np.unique(shards).tolist():
            mine = shards == shard
            out[mine] = maps[shard][indices[mine] - index.shard_start[shard]]
        return out

    return signatures_of


def origins_of(context: RunContext, index: CorpusIndex, wanted: np.ndarray) -> dict[int, str]:
    """``file:line`` of the wanted documents, read from one shard summary at a time."""
    wanted = np.unique(wanted)
    found: dict[int, str] = {}
    for shard, start, count in zip(context.shards, index.shard_start.tolist(), index.shard_documents.tolist()):
        mine = wanted[(wanted >= start) & (wanted < start + count)]
        if len(mine):
            origins = _shard_summary(context, shard.index)["origins"]
            found.update((i, origins[i - start]) for i in mine.tolist())
    return found


def _audit_entries(
    context, index: CorpusIndex, keep, exact, exact_removed, near, near_removed, similarity
) -> Iterator[dict]:
    """One entry per removed document (with why, and the survivor it duplicates), and the filters'
    notes on each document (see :func:`phi_hpc.data.filters.audit_order`), in input order."""
    notes_by_doc: dict[int, list[FilterNote]] = {}
    for note in index.notes:
        notes_by_doc.setdefault(note.document, []).append(note)
    removed = np.flatnonzero(~keep)
    mentioned = np.unique(np.concatenate([removed, np.fromiter(notes_by_doc, np.int64)]))
    origins = origins_of(
        context, index, np.concatenate([mentioned, exact[removed], near[removed], near[exact[removed]]])
    )
    for i in mentioned.tolist():
        notes = audit_order(notes_by_doc.get(i, []), kept=bool(keep[i]))
        yield from (note.audit_entry(origins[i]) for note in notes)
        if keep[i] or any(note.kind == FILTERED for note in notes):
            continue
        if exact_removed[i]:
            survivor = int(exact[i])
            if near_removed[survivor]:
                survivor = int(near[survivor])  # its exact twin was itself a near duplicate
            yield {"document": origins[i], "removed": "exact_duplicate", "survivor": origins[survivor]}
        else:
            yield {
                "document": origins[i],
                "removed": "near_duplicate",
                "survivor": origins[int(near[i])],
                "jaccard_estimate": round(float(similarity[i]), 4),
            }


def _counted(context: RunContext, index: CorpusIndex, keep: np.ndarray, key: str) -> tuple[int, int]:
    """(sum over all documents, sum over kept documents) of a per-document map output, streamed."""
    total = kept = 0
    for values, start in zip(shard_arrays(context, index, key), index.shard_start.tolist()):
        total += int(values.sum())
        kept += int(values[keep[start : start + len(values)]].sum())
    return total, kept


def run_reduce(context: RunContext) -> dict:
    """Cluster duplicates over the whole corpus; write the keep mask, audit and bad-input list."""
    from phi_hpc.data.dedup import exact_survivors, near_survivors, resolve_bands

    layout = context.layout
    if layout.reduce_done.is_file():
        return json.loads(layout.reduce_done.read_text())
    index = load_index(context)
    n = index.size
    ids = np.arange(n)
    eligible = index.eligible
    dedup = context.config.dedup
    exact = (
        exact_survivors(corpus_array(context, index, "digests", (16,), np.uint8), eligible)
        if dedup.exact
        else ids.copy()
    )
    exact_removed = eligible & (exact != ids)
    near_eligible = eligible & ~exact_removed
    bands, rows = resolve_bands(dedup.threshold, dedup.num_perm, dedup.bands, dedup.rows)
    if dedup.near:
        near, similarity = near_survivors(
            _band_columns(context, index, bands),
            near_eligible,
            signature_reader(context, index),
            dedup.threshold,
            dedup.verify_candidates,
        )
    else:
        near, similarity = ids.copy(), np.ones(n)
    near_removed = near_eligible & (near != ids)
    keep = near_eligible & ~near_removed
    del ids

    layout.out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(layout.out, "audit")
    remove_stale_temporaries(layout.out, "bad_inputs")
    with atomic_write(layout.audit) as handle:
        for entry in _audit_entries(context, index, keep, exact, exact_removed, near, near_removed, similarity):
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
    with atomic_write(layout.bad_inputs) as handle:
        for entry in index.bad:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
    with atomic_write(layout.reduce_arrays, "wb", encoding=None) as handle:
        np.savez(handle, keep=keep)
    bytes_in, bytes_out = _counted(context, index, keep, "bytes")
    _, tokens = _counted(context, index, keep, "tokens")
    result = {
        "fingerprint": context.fingerprint,
        "lsh": {"bands": bands, "rows": rows},
        "counts": {
            "documents_in": n,
            "bad": len(index.bad),
            "filtered": count_by_filter(index.notes, FILTERED),
            "flagged": count_by_filter(index.notes, FLAGGED),
            "exact_duplicates": int(exact_removed.sum()),
            "near_duplicates": int(near_removed.sum()),
            "documents_out": int(keep.sum()),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "tokens": tokens,
        },
    }
    write_json(layout.reduce_done, result)
    return result
