"""The pack stage of ``prepare``: the outputs users keep.

A seeded, document-level train/validation split of the documents reduce kept; their tokens are
copied from the map shards into ``train``/``validation`` ``.bin``/``.idx``, and ``manifest.json`` is
written last (its presence, with this run's fingerprint, means the run is complete).
"""

from __future__ import annotations

import json
import shutil

import numpy as np

from phi_hpc import __version__
from phi_hpc.data.layout import Layout, remove_stale_temporaries
from phi_hpc.data.plan import FORMAT, RunContext, recorded_config
from phi_hpc.errors import PhiError
from phi_hpc.fileio import sha256_file, write_json

_COPY_CHUNK = 4096  # documents looked up and copied per step


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


def run_pack(context: RunContext, progress=None) -> dict:
    """Write the train/validation token files and, last, the manifest."""
    from phi_hpc.data.indexed import IndexedDataset, IndexedDatasetWriter, dtype_for_vocab
    from phi_hpc.data.reduce import corpus_array, load_index

    config, layout = context.config, context.layout
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
        raise PhiError(
            f"no documents left to write: {counts['documents_in']} read, {counts['bad']} bad inputs, "
            f"all others removed",
            f"see {layout.bad_inputs} and {layout.audit}",
        )
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
            for start in range(0, len(documents), _COPY_CHUNK):
                chunk = documents[start : start + _COPY_CHUNK]
                for shard, row in zip(index.shard_of(chunk).tolist(), token_rows[chunk].tolist()):
                    writer.add_document(shard_data[shard][row])
                if task is not None:
                    progress.advance(task, len(chunk))
        outputs.append(
            {
                "split": split,
                "prefix": split,
                "documents": int(len(documents)),
                "tokens": int(tokens[documents].sum()),
                "sha256": {"bin": sha256_file(f"{prefix}.bin"), "idx": sha256_file(f"{prefix}.idx")},
            }
        )
    manifest = {
        "format": FORMAT,
        "version": __version__,
        "fingerprint": context.fingerprint,
        "counts": reduced["counts"],
        "lsh": reduced["lsh"],
        "outputs": outputs,
        "dtype": str(dtype),
        "tokenizer": context.tokenizer.to_dict(),
        "inputs": {
            "files": len({f.path for s in context.shards for f in s.files}),
            "bytes": index.input_bytes,
            "paths": list(dict.fromkeys(config.inputs)),
        },
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
