"""``prepare`` as three resumable stages: map (per shard) -> reduce (whole corpus) -> pack.

* **map** (one input shard; shards are independent, so they run in parallel or as a Slurm array):
  read documents, compute content digests and MinHash signatures, run optional document filters,
  tokenize the survivors of the filters. Writes ``.work/RUN/map/shard-NNNNN.{bin,idx,sig.npy,npz}``
  and, last, ``shard-NNNNN.json``, whose presence marks the shard complete.
* **reduce** (needs every shard; in :mod:`phi_hpc.data.reduce`): exact + near-duplicate clustering
  over all documents' LSH band keys, streamed a band at a time (full signatures are memory-mapped
  and read for candidate pairs only); writes the keep mask, ``audit.jsonl`` and ``bad_inputs.jsonl``.
* **pack**: seeded document-level train/validation split; copies kept documents' tokens into
  ``train``/``validation`` ``.bin``/``.idx``; writes ``manifest.json`` last.

Crash safety: every file is written under a temporary name and renamed when complete, and a stage
whose completion marker exists is skipped. Every stage's output is a pure function of the inputs,
the tokenizer and the config (never of ``--workers`` or timing), so a run killed at any point and
rerun produces byte-identical outputs. All of it is keyed by a fingerprint of (config, tokenizer,
input files): change any of them and stale intermediate state is discarded, not reused.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from phi_hpc import __version__
from phi_hpc.config import to_dict
from phi_hpc.data.config import PrepareConfig
from phi_hpc.data.layout import Layout, remove_stale_temporaries
from phi_hpc.data.sources import (BadInput, Document, InputFile, expand_inputs, file_fingerprint, read_documents,
                                  split_input)
from phi_hpc.errors import PhiError, UsageError
from phi_hpc.fileio import atomic_write, sha256_file, write_json

if TYPE_CHECKING:
    from phi_hpc.data.tokenize import TokenizerInfo

FORMAT = "phi-hpc-prepare/1"
# Fields that change how a run executes but never what it writes (kept out of the fingerprint and
# the manifest, so outputs are identical whatever the worker count).
RUNTIME_FIELDS = ("workers", "strict", "keep_work", "output_dir")
_BATCH_DOCUMENTS = 512
_BATCH_BYTES = 1 << 20  # 4 MB batches cost a third more map memory (365 vs 270 MB peak on a 50 MB shard) for no speed


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
    files = [piece for source in expand_inputs(list(config.inputs), config.glob)
             for piece in split_input(source, int(limit))]
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


# -- run context ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunContext:
    config: PrepareConfig
    layout: Layout
    shards: list[Shard]
    tokenizer: "TokenizerInfo"
    fingerprint: str


def recorded_config(config: PrepareConfig) -> dict:
    data = to_dict(config)
    for name in RUNTIME_FIELDS:
        data.pop(name, None)
    return data


def open_run(config: PrepareConfig) -> RunContext:
    """Validate the tokenizer and inputs, plan shards, and record the plan in this run's work folder."""
    from phi_hpc.data.tokenize import describe_tokenizer

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
    if config.quality_model or config.quality_scores or config.decontaminate:
        from phi_hpc.quality.stages import content_hashes  # the filters' inputs by content, not path

        identity["filter_inputs"] = content_hashes(config)
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    layout = Layout(Path(config.output_dir).absolute(), fingerprint[:16])
    if not layout.plan.is_file():
        write_json(layout.plan, {"fingerprint": fingerprint,
                                 "shards": [[[f.path, f.start, f.end] for f in s.files] for s in shards]})
    return RunContext(config, layout, shards, tokenizer, fingerprint)


def _rensa_or_error() -> str:
    """rensa's versions, part of the run's identity (an upgrade may change its signatures)."""
    from phi_hpc.data.minhash import rensa_version

    found = rensa_version()
    if found is None:
        raise UsageError("dedup.minhash=rensa but the rensa package is not installed",
                         "pip install rensa, or use the default dedup.minhash=numpy")
    return found


# -- map -----------------------------------------------------------------------------------------

def build_filters(config: PrepareConfig) -> list:
    """The optional document filters, imported only when asked for (they pull in heavy libraries)."""
    if not (config.quality_model or config.quality_scores or config.decontaminate):
        return []
    if config.quality_model and config.quality_scores:
        raise UsageError("--quality-model and --quality-scores both given", "use one: stored scores or inline scoring")
    try:
        from phi_hpc.quality import stages
    except ModuleNotFoundError as exc:
        raise UsageError("quality/decontamination filters are not available in this installation",
                         f"missing module {exc.name}") from None
    filters = []
    if config.quality_model:
        filters.append(stages.build_quality_filter(config.quality_model, config.quality_threshold))
    if config.quality_scores:
        filters.append(stages.build_score_filter(config.quality_scores, config.quality_threshold))
    if config.decontaminate:
        filters.append(stages.build_decontamination_filter(config.benchmark_data, config.decontaminate_report_only,
                                                           config.decontamination))
    return filters


_FILTER_CACHE: dict[tuple, list] = {}


def _filters_for(config: PrepareConfig) -> list:
    """Filters are built once per process, not once per shard (a quality model takes a while to load)."""
    if not (config.quality_model or config.quality_scores or config.decontaminate):
        return build_filters(config)
    key = (config.quality_model, config.quality_scores, config.quality_threshold, config.decontaminate,
           config.decontaminate_report_only,
           config.benchmark_data, config.decontamination)
    if key not in _FILTER_CACHE:
        _FILTER_CACHE[key] = build_filters(config)
    return _FILTER_CACHE[key]


def _shard_documents(shard: Shard, config: PrepareConfig, bad: list[BadInput]) -> Iterator[Document]:
    def on_bad(problem: BadInput) -> None:
        if config.strict:
            raise UsageError(f"{problem.where}: {problem.reason}",
                             "fix or remove that input, or run without --strict to skip and count bad input")
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


def run_map(config: PrepareConfig, shard_index: int, context: RunContext | None = None) -> dict:
    """Process one shard (skipped if already complete); returns its summary (documents, bytes...)."""
    from phi_hpc.data.dedup import band_keys, resolve_bands
    from phi_hpc.data.indexed import IndexedDatasetWriter, dtype_for_vocab
    from phi_hpc.data.minhash import MinHasher
    from phi_hpc.data.tokenize import DocumentEncoder

    context = context or open_run(config)
    if not 0 <= shard_index < len(context.shards):
        count = len(context.shards)
        raise UsageError(f"--shard {shard_index}: the plan has {count} shards (0..{count - 1})",
                         "see phi-hpc prepare ... --stage plan")
    layout = context.layout
    done = layout.shard_done(shard_index)
    if done.is_file():
        return json.loads(done.read_text())
    prefix = layout.shard_prefix(shard_index)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(prefix.parent, prefix.name)

    shard = context.shards[shard_index]
    dedup = config.dedup
    hasher = MinHasher(num_perm=dedup.num_perm, ngram=dedup.ngram, seed=dedup.seed, backend=dedup.minhash)
    lsh_bands, lsh_rows = resolve_bands(dedup.threshold, dedup.num_perm, dedup.bands, dedup.rows)
    encoder = DocumentEncoder.cached(config.tokenizer, context.tokenizer.eos_id)
    filters = _filters_for(config)
    bad: list[BadInput] = []
    origins: list[str] = []
    filtered: list[dict] = []
    flagged: list[dict] = []
    scored: list[dict] = []
    digests, signatures, keys, token_rows, token_counts, byte_counts = [], [], [], [], [], []
    rows_written = 0
    with IndexedDatasetWriter(prefix, dtype_for_vocab(context.tokenizer.vocab_size)) as writer:
        for batch in _prefetched(_batches(_shard_documents(shard, config, bad))):
            texts = [d.text for d in batch]
            encoded = [t.encode("utf-8") for t in texts]
            first = len(origins)
            origins.extend(d.origin for d in batch)
            digests.append(np.frombuffer(b"".join(hashlib.sha256(e).digest()[:16] for e in encoded),
                                         dtype=np.uint8).reshape(-1, 16))
            byte_counts.append(np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded)))
            shingles, counts = hasher.shingle_hashes_of_bytes(encoded)
            signatures.append(hasher.signatures_from_shingles(shingles, counts))
            keys.append(band_keys(signatures[-1], lsh_bands, lsh_rows))
            keep = _apply_filters(filters, texts, first, filtered, flagged, scored)
            row_of_document = np.full(len(batch), -1, dtype=np.int64)  # -1: dropped by a filter
            tokens = np.zeros(len(batch), dtype=np.int64)
            kept = np.flatnonzero(keep)
            ids, lengths = encoder.encode_flat([texts[i] for i in kept] if len(kept) < len(batch) else texts,
                                               writer.dtype)
            writer.add_documents(ids, lengths)
            row_of_document[kept] = np.arange(rows_written, rows_written + len(kept))
            tokens[kept] = lengths
            rows_written += len(kept)
            token_rows.append(row_of_document)
            token_counts.append(tokens)

    def stacked(parts, dtype, width=None):
        if parts:
            return np.concatenate(parts)
        return np.zeros((0, width) if width else 0, dtype=dtype)

    with atomic_write(layout.shard_signatures(shard_index), "wb", encoding=None) as handle:
        np.save(handle, stacked(signatures, np.uint32, dedup.num_perm))  # memory-mapped by reduce
    with atomic_write(layout.shard_arrays(shard_index), "wb", encoding=None) as handle:
        np.savez(handle, digests=stacked(digests, np.uint8, 16), band_keys=stacked(keys, np.uint64, lsh_bands),
                 token_rows=stacked(token_rows, np.int64), tokens=stacked(token_counts, np.int64),
                 bytes=stacked(byte_counts, np.int64))
    summary = {
        "fingerprint": context.fingerprint,
        "shard": shard_index,
        "documents": len(origins),
        "input_bytes": shard.bytes,
        "origins": origins,
        "bad": [b.to_dict() for b in bad],
        "filtered": filtered,
        "flagged": flagged,
        "scored": scored,
    }
    write_json(done, summary)
    return summary


def _apply_filters(filters: list, texts: list[str], first: int, filtered: list[dict],
                   flagged: list[dict], scored: list[dict]) -> list[bool]:
    """Run each filter on the documents still kept; record for the audit every drop, every kept
    document a filter gave a reason for (e.g. decontamination in report-only mode), and every
    score a filter gave a kept document (the quality probability, to tune the threshold later)."""
    keep = [True] * len(texts)
    for document_filter in filters:
        alive = [i for i in range(len(texts)) if keep[i]]
        if not alive:
            break
        verdicts = document_filter.evaluate([texts[i] for i in alive])
        if len(verdicts) != len(alive):
            raise PhiError(f"filter {document_filter.name!r} returned {len(verdicts)} verdicts "
                           f"for {len(alive)} documents")
        for i, verdict in zip(alive, verdicts):
            entry = {"document": first + i, "filter": document_filter.name, "reason": verdict.reason,
                     "score": verdict.score}
            if not verdict.keep:
                keep[i] = False
                filtered.append(entry)
            elif verdict.reason:
                flagged.append(entry)
            elif verdict.score is not None:
                scored.append({"document": first + i, "filter": document_filter.name, "score": verdict.score})
    return keep


# -- reduce --------------------------------------------------------------------------------------

def run_reduce(config: PrepareConfig, context: RunContext | None = None) -> dict:
    """Cluster duplicates over the whole corpus (see :mod:`phi_hpc.data.reduce`)."""
    from phi_hpc.data.reduce import run_reduce as reduce_stage

    return reduce_stage(config, context)


# -- pack ----------------------------------------------------------------------------------------

def split_documents(count: int, validation_fraction: float, seed: int, shuffle: bool) -> dict[str, np.ndarray]:
    """Positions (0..count-1) of the kept documents in each split, in output order.

    The validation set is a seeded random sample of whole documents; its size is
    ``round(fraction * count)``, at least one document when the fraction is positive and there are
    two or more documents (so a tiny run still has something to validate on).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    n_val = int(round(validation_fraction * count))
    if validation_fraction > 0 and count >= 2:
        n_val = min(max(n_val, 1), count - 1)
    validation, train = order[:n_val], order[n_val:]
    if not shuffle:
        validation, train = np.sort(validation), np.sort(train)
    splits = {"train": train}
    if n_val:
        splits["validation"] = validation
    return splits


def run_pack(config: PrepareConfig, context: RunContext | None = None, progress=None) -> dict:
    """Write the train/validation token files and, last, the manifest."""
    from phi_hpc.data.indexed import IndexedDataset, IndexedDatasetWriter, dtype_for_vocab
    from phi_hpc.data.reduce import corpus_array, load_index

    context = context or open_run(config)
    layout = context.layout
    if not layout.reduce_done.is_file():
        raise PhiError("reduce stage has not finished", "run --stage reduce first (or --stage all)")
    reduced = json.loads(layout.reduce_done.read_text())
    index = load_index(context)
    token_rows = corpus_array(context, index, "token_rows")
    tokens = corpus_array(context, index, "tokens")
    with np.load(layout.reduce_arrays) as data:
        keep = data["keep"]
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        counts = reduced["counts"]
        raise PhiError(f"no documents left to write: {counts['documents_in']} read, {counts['bad']} bad inputs, "
                       f"all others removed", f"see {layout.bad_inputs} and {layout.audit}")
    splits = split_documents(len(kept), config.split.validation_fraction, config.split.seed, config.split.shuffle)
    shard_data = {s.index: IndexedDataset(layout.shard_prefix(s.index)) for s in context.shards}
    dtype = dtype_for_vocab(context.tokenizer.vocab_size)
    outputs = []
    task = progress.add_task("pack", total=len(kept)) if progress is not None else None
    for split, positions in splits.items():
        prefix = layout.output_prefix(split)
        remove_stale_temporaries(layout.out, split)
        documents = kept[positions]
        with IndexedDatasetWriter(prefix, dtype) as writer:
            for start in range(0, len(documents), 4096):
                chunk = documents[start: start + 4096]
                for shard, row in zip(index.shard_of(chunk).tolist(), token_rows[chunk].tolist()):
                    writer.add_document(shard_data[shard][row])
                if task is not None:
                    progress.advance(task, min(4096, len(documents) - start))
        outputs.append({
            "split": split,
            "prefix": split,
            "documents": int(len(documents)),
            "tokens": int(tokens[documents].sum()),
            "sha256": {"bin": sha256_file(f"{prefix}.bin"), "idx": sha256_file(f"{prefix}.idx")},
        })
    manifest = {
        "format": FORMAT,
        "version": __version__,
        "fingerprint": context.fingerprint,
        "counts": reduced["counts"],
        "lsh": reduced["lsh"],
        "outputs": outputs,
        "dtype": str(dtype),
        "tokenizer": context.tokenizer.to_dict(),
        "inputs": {"files": len({f.path for s in context.shards for f in s.files}), "bytes": index.input_bytes,
                   "paths": list(dict.fromkeys(config.inputs))},
        "shards": len(context.shards),
        "bad_inputs": {"file": layout.bad_inputs.name, "first": index.bad[:20]},
        "audit": layout.audit.name,
        "config": recorded_config(config),
    }
    remove_stale_temporaries(layout.out, "manifest")
    write_json(layout.manifest, manifest)
    _remove_other_runs_work(layout)
    return manifest


def _remove_other_runs_work(layout: Layout) -> None:
    """Work folders of other fingerprints (an earlier config or input) can never be used again."""
    if layout.all_work.is_dir():
        for folder in layout.all_work.iterdir():
            if folder.is_dir() and folder.name != layout.run_id:
                shutil.rmtree(folder, ignore_errors=True)


# -- everything ----------------------------------------------------------------------------------

def completed_manifest(layout: Layout, fingerprint: str) -> dict | None:
    """The manifest of a finished identical run in ``OUT``, if there is one (then there is nothing to do)."""
    if not layout.manifest.is_file():
        return None
    try:
        manifest = json.loads(layout.manifest.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    for output in manifest.get("outputs", []):
        for suffix in ("bin", "idx"):
            if not (layout.out / f"{output['prefix']}.{suffix}").is_file():
                return None
    return manifest


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def prepare(config: PrepareConfig, show_progress: bool | None = None) -> dict:
    """Run every stage (skipping finished work) and return the manifest. Also writes ``summary.json``."""
    from phi_hpc.progress import progress_bar

    started = time.perf_counter()
    context = open_run(config)
    layout = context.layout
    timings: dict[str, float] = {}
    manifest = completed_manifest(layout, context.fingerprint)
    resumed = manifest is not None
    if manifest is None:
        todo = [s for s in context.shards if not layout.shard_done(s.index).is_file()]
        # The pool starts before the progress bar's refresh thread exists (forking with live threads
        # is how deadlocks are made).
        pool = _start_pool(context, effective_workers(config, len(todo))) if len(todo) > 1 else None
        try:
            with progress_bar(disable=None if show_progress is None else not show_progress) as progress:
                stage_start = time.perf_counter()
                map_all(config, context, progress, pool)
                timings["map"] = time.perf_counter() - stage_start
                stage_start = time.perf_counter()
                task = progress.add_task("reduce (dedup)", total=1)
                run_reduce(config, context)
                progress.advance(task)
                timings["reduce"] = time.perf_counter() - stage_start
                stage_start = time.perf_counter()
                manifest = run_pack(config, context, progress)
                timings["pack"] = time.perf_counter() - stage_start
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    if not config.keep_work:
        shutil.rmtree(layout.all_work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    write_json(layout.summary, {
        "command": "prepare",
        "status": "already complete" if resumed else "completed",
        "seconds": round(elapsed, 3),
        "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
        "workers": effective_workers(config, len(context.shards)),
        "input_mb_per_s": round(manifest["counts"]["bytes_in"] / 1e6 / elapsed, 3) if elapsed > 0 else None,
        "counts": manifest["counts"],
        "outputs": manifest["outputs"],
        "manifest": str(layout.manifest),
    })
    return manifest


def effective_workers(config: PrepareConfig, shards: int) -> int:
    requested = config.workers or available_cpus()
    return max(1, min(requested, shards))


def map_all(config: PrepareConfig, context: RunContext, progress=None, pool=None) -> None:
    """Run the map stage over every unfinished shard: in this process, or on ``pool`` if given."""
    todo = [s for s in context.shards if not context.layout.shard_done(s.index).is_file()]
    total = sum(s.bytes for s in context.shards)
    task = progress.add_task("map (read, signatures, tokenize)", total=total,
                             completed=total - sum(s.bytes for s in todo)) if progress is not None else None
    if pool is None:
        for shard in todo:
            run_map(config, shard.index, context)
            if task is not None:
                progress.advance(task, shard.bytes)
        return
    # Biggest shards first, so that one large file does not start last and run alone.
    ordered = sorted(todo, key=lambda s: (-s.bytes, s.index))
    for shard_index, error in pool.imap_unordered(_map_in_worker, [(config, s.index) for s in ordered]):
        if error is not None:
            pool.terminate()
            # Report what a sequential run would: the first bad input in input order. Earlier
            # shards either completed cleanly or raise their own error here.
            for shard in todo:
                if shard.index >= shard_index:
                    break
                if not context.layout.shard_done(shard.index).is_file():
                    run_map(config, shard.index, context)
            raise PhiError(error[0], error[1], error[2])
        if task is not None:
            progress.advance(task, context.shards[shard_index].bytes)


# Set just before forking workers: a forked worker inherits the planned run (and the loaded
# tokenizer) instead of planning it again.
_INHERITED_CONTEXT: RunContext | None = None


def _start_pool(context: RunContext, workers: int):
    global _INHERITED_CONTEXT
    if workers <= 1:
        return None
    threads = max(1, available_cpus() // workers)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    _INHERITED_CONTEXT = context
    return multiprocessing.get_context(method).Pool(workers, initializer=_init_worker, initargs=(threads,))


def _init_worker(threads: int) -> None:
    # Read by tokenizers when its thread pool first starts (it has not in this process yet):
    # workers x threads = cores.
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"


def _map_in_worker(task: tuple[PrepareConfig, int]):
    config, shard_index = task
    try:
        context = _INHERITED_CONTEXT
        if context is None or context.config != config:
            context = open_run(config)  # spawned (non-Linux): plan once per task
        run_map(config, shard_index, context)
    except PhiError as exc:  # sent back as data: custom exceptions lose their fields when pickled
        return shard_index, (exc.message, exc.hint, exc.exit_code)
    return shard_index, None
