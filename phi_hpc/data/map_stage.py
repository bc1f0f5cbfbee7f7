"""The map stage of ``prepare``: one input shard at a time (shards are independent, so they run in
parallel on this machine, see :mod:`phi_hpc.data.executor`, or as a Slurm array).

It reads the shard's documents in batches and, for each document, computes what the later stages
need: the content digest (exact dedup), the MinHash signature and its LSH band keys (near dedup),
the filters' verdicts, and, for the filters' survivors, the tokens. Each batch's results are one
:class:`MappedBatch`; a shard's are their concatenation, written as
``.work/RUN/map/shard-NNNNN.{bin,idx,sig.npy,npz}`` and, last, ``shard-NNNNN.json``, whose presence
marks the shard complete (a rerun skips it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from phi_hpc.data.config import PrepareConfig
from phi_hpc.data.filters import FilterNote, apply_filters
from phi_hpc.data.layout import remove_stale_temporaries
from phi_hpc.data.plan import RunContext, Shard
from phi_hpc.data.sources import BadInput, Document, read_documents
from phi_hpc.errors import PhiError, UsageError
from phi_hpc.fileio import atomic_write, write_json

_BATCH_DOCUMENTS = 512
_BATCH_BYTES = 1 << 20  # 4 MB batches cost a third more map memory (365 vs 270 MB peak on a 50 MB shard) for no speed


@dataclass(kw_only=True)
class MappedBatch:
    """The map stage's output for consecutive documents of a shard, one row per document read.

    The arrays are the shard's ``.npz`` (and ``.sig.npy``) under their field names; ``origins``
    and ``notes`` go into its summary."""

    origins: list[str]  # file:line of each document
    digests: np.ndarray  # uint8[n, 16]: the first 16 bytes of the text's sha256 (exact dedup)
    signatures: np.ndarray  # uint32[n, num_perm]: MinHash (near dedup; memory-mapped by reduce)
    band_keys: np.ndarray  # uint64[n, bands]: the signature's LSH band keys
    token_rows: np.ndarray  # int64[n]: the document's row in the shard's .bin/.idx; -1: a filter dropped it
    tokens: np.ndarray  # int64[n]: tokens written (EOS included); 0 when dropped
    bytes: np.ndarray  # int64[n]: UTF-8 size of the text
    notes: list[FilterNote]  # the filters' drops, flags and scores (shard document indices)

    ARRAYS = ("digests", "band_keys", "token_rows", "tokens", "bytes")  # the .npz, in this order


def _column(batches: list[MappedBatch], name: str, empty: np.ndarray) -> np.ndarray:
    """One field of a shard's batches, concatenated (``empty`` when the shard had no documents)."""
    return np.concatenate([getattr(b, name) for b in batches]) if batches else empty


class ShardMapper:
    """What mapping needs, set up once per shard (before any file is opened, so a filter that
    cannot be built leaves nothing behind): the hasher, LSH banding, tokenizer and filters."""

    def __init__(self, context: RunContext) -> None:
        from phi_hpc.data.dedup import resolve_bands
        from phi_hpc.data.minhash import MinHasher
        from phi_hpc.data.tokenize import DocumentEncoder

        config = context.config
        dedup = config.dedup
        self.hasher = MinHasher(num_perm=dedup.num_perm, ngram=dedup.ngram, seed=dedup.seed, backend=dedup.minhash)
        self.bands, self.rows = resolve_bands(dedup.threshold, dedup.num_perm, dedup.bands, dedup.rows)
        self.encoder = DocumentEncoder.cached(config.tokenizer, context.tokenizer.eos_id, config.tokenizer_backend)
        self.filters = context.filters.build(config)
        self.rows_written = 0  # documents written to the shard's .bin/.idx so far

    def map_batch(self, batch: list[Document], first: int, writer) -> MappedBatch:
        """Hash, filter and tokenize ``batch``, appending the survivors' tokens to ``writer`` (the
        shard's IndexedDatasetWriter); ``first``: the shard index of the batch's first document."""
        from phi_hpc.data.dedup import band_keys

        texts = [d.text for d in batch]
        encoded = [t.encode("utf-8") for t in texts]
        digests = np.frombuffer(b"".join(hashlib.sha256(e).digest()[:16] for e in encoded), dtype=np.uint8).reshape(
            -1, 16
        )
        sizes = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        shingles, counts = self.hasher.shingle_hashes_of_bytes(encoded)
        signatures = self.hasher.signatures_from_shingles(shingles, counts)
        keep, notes = apply_filters(self.filters, texts, first)
        kept = np.flatnonzero(keep)
        survivors = [texts[i] for i in kept] if len(kept) < len(batch) else texts
        if self.rows_written == 0:
            self._check_encoder(survivors, kept, batch)
        ids, lengths = self.encoder.encode_flat(survivors, writer.dtype)
        writer.add_documents(ids, lengths)
        token_rows = np.full(len(batch), -1, dtype=np.int64)
        token_rows[kept] = np.arange(self.rows_written, self.rows_written + len(kept))
        self.rows_written += len(kept)
        tokens = np.zeros(len(batch), dtype=np.int64)
        tokens[kept] = lengths
        return MappedBatch(
            origins=[d.origin for d in batch],
            digests=digests,
            signatures=signatures,
            band_keys=band_keys(signatures, self.bands, self.rows),
            token_rows=token_rows,
            tokens=tokens,
            bytes=sizes,
            notes=notes,
        )

    def _check_encoder(self, texts: list[str], kept: np.ndarray, batch: list[Document]) -> None:
        """Each shard's first documents, encoded by tokenizers too: tiktoken must give the same ids."""
        where = self.encoder.disagreement(texts)
        if where is not None:
            raise PhiError(
                f"{batch[kept[where]].origin}: tiktoken's token ids differ from tokenizers' for this document",
                "rerun with --set tokenizer_backend=tokenizers, and please report the document",
            )


def run_map(context: RunContext, shard_index: int) -> dict:
    """Process one shard (skipped if already complete); returns its summary (documents, bytes...)."""
    from phi_hpc.data.indexed import IndexedDatasetWriter, dtype_for_vocab

    if not 0 <= shard_index < len(context.shards):
        count = len(context.shards)
        raise UsageError(
            f"--shard {shard_index}: the plan has {count} shards (0..{count - 1})",
            "see phi-hpc prepare ... --stage plan",
        )
    layout = context.layout
    done = layout.shard_done(shard_index)
    if done.is_file():
        return json.loads(done.read_text())
    prefix = layout.shard_prefix(shard_index)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(prefix.parent, prefix.name)
    shard = context.shards[shard_index]
    bad: list[BadInput] = []
    batches: list[MappedBatch] = []
    mapper = ShardMapper(context)
    with IndexedDatasetWriter(prefix, dtype_for_vocab(context.tokenizer.vocab_size)) as writer:
        first = 0
        for batch in _prefetched(_batches(_shard_documents(shard, context.config, bad))):
            batches.append(mapper.map_batch(batch, first, writer))
            first += len(batch)
    return _write_shard(context, shard, batches, mapper.bands, bad)


def _write_shard(
    context: RunContext, shard: Shard, batches: list[MappedBatch], bands: int, bad: list[BadInput]
) -> dict:
    """The shard's arrays, one at a time, then its summary (last: it marks the shard complete)."""
    layout = context.layout
    with atomic_write(layout.shard_signatures(shard.index), "wb", encoding=None) as handle:
        empty = np.zeros((0, context.config.dedup.num_perm), np.uint32)
        np.save(handle, _column(batches, "signatures", empty))  # memory-mapped by reduce
    empties = {"digests": np.zeros((0, 16), np.uint8), "band_keys": np.zeros((0, bands), np.uint64)}
    with atomic_write(layout.shard_arrays(shard.index), "wb", encoding=None) as handle:
        np.savez(
            handle,
            **{name: _column(batches, name, empties.get(name, np.zeros(0, np.int64))) for name in MappedBatch.ARRAYS},
        )
    summary = {
        "fingerprint": context.fingerprint,
        "shard": shard.index,
        "documents": sum(len(b.origins) for b in batches),
        "input_bytes": shard.bytes,
        "origins": [o for b in batches for o in b.origins],
        "bad": [b.to_dict() for b in bad],
        "filter_notes": [n.to_dict() for b in batches for n in b.notes],
    }
    write_json(layout.shard_done(shard.index), summary)
    return summary


def _shard_documents(shard: Shard, config: PrepareConfig, bad: list[BadInput]) -> Iterator[Document]:
    def on_bad(problem: BadInput) -> None:
        if config.strict:
            raise UsageError(
                f"{problem.where}: {problem.reason}",
                "fix or remove that input, or run without --strict to skip and count bad input",
            )
        bad.append(problem)

    remaining = config.max_documents
    for source in shard.files:
        for document in read_documents(source, config.text_key, on_bad):
            yield document
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    return


def _batches(documents: Iterator[Document]) -> Iterator[list[Document]]:
    batch: list[Document] = []
    size = 0
    for document in documents:
        batch.append(document)
        size += len(document.text)
        if len(batch) >= _BATCH_DOCUMENTS or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _prefetched(items: Iterator, depth: int = 2) -> Iterator:
    """``items``, produced by a background thread up to ``depth`` ahead: reading, decompressing and
    parsing the next batch overlaps with tokenizing this one (the tokenizer releases the GIL).
    Order is unchanged and the producer's exceptions are raised here, where they would have been."""
    import queue
    import threading

    done = object()
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put((item, None))
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, which raises it)
            slots.put((done, exc))
            return
        slots.put((done, None))

    thread = threading.Thread(target=produce, name="prepare-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.01)
