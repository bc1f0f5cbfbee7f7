"""Benchmark ``phi-hpc prepare`` against its peers on the Python standard library.

Same machine, same run, same documents, same worker count for everyone:

1. raw ``tokenizers`` ``encode_batch`` over all documents held in memory (the speed limit of
   tokenization alone; its Rust thread pool uses every core);
2. ``phi-hpc prepare`` end to end (a fresh process: read, exact + MinHash-LSH dedup, tokenize,
   pack .bin/.idx, manifest) with ``--workers W``;
3. datatrove (MinHash dedup in its four stages + ``DocumentTokenizer``) with ``W`` workers, same
   shingles (5 words), same number of hash functions, same tokenizer;
4. MinHash signatures alone: ours vs datasketch (``MinHash.update_batch``, its fastest path), both
   including shingling, 256 permutations.

Corpus: the stdlib's ``.py`` files outside ``site-packages`` and test folders, in sorted order, up to
``--max-mb`` (default: all of them, 12.6 MB here; about a minute on 2 quiet cores. A smaller corpus
measures start-up more than throughput: at 6 MB the fixed ~1 s of interpreter, tokenizer load and
worker start is a third of the run),
written once as 8 ``.jsonl`` files that both pipelines read. Results are printed and written to
``docs/benchmarks/prepare.md``.

Usage: ``python benchmarks/prepare.py [--workers 2] [--max-mb 100] [--repeats 2] [--datasketch-docs 300]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from checkout import REPO  # noqa: E402 (beside this script: puts this checkout first on sys.path)

from benchmarks.data import data_file  # noqa: E402  (the tests' data resolver: mirror, else upstream)

TOKENIZER = data_file("tokenizer")
PARTS = 8

from machine_info import cpu_model  # noqa: E402 (beside this script)
from prepare_process import cpu_seconds, run_prepare, run_timed  # noqa: E402 (beside this script)
from stdlib_corpus import stdlib_py_files  # noqa: E402


def write_jsonl_parts(texts: list[str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    parts = [folder / f"part-{i:02d}.jsonl" for i in range(PARTS)]
    per_part = -(-len(texts) // PARTS)
    for i, part in enumerate(parts):
        with open(part, "w", encoding="utf-8") as handle:
            for j, text in enumerate(texts[i * per_part : (i + 1) * per_part]):
                handle.write(json.dumps({"text": text, "id": f"{i}-{j}"}) + "\n")
    return parts


@dataclass
class Timing:
    """Best wall time over the repeats, and the CPU seconds (all threads and child processes) of that
    repeat. On a machine shared with other jobs wall time is noisy; CPU time is not."""

    wall: float = float("inf")
    cpu: float = float("nan")

    def add(self, wall: float, cpu: float) -> None:
        if wall < self.wall:
            self.wall, self.cpu = wall, cpu


def time_calls(encode, texts: list[str], repeats: int) -> Timing:
    """``encode(texts)`` after a warm-up (its thread pool started), best of ``repeats``."""
    encode(texts[:20])
    timing = Timing()
    for _ in range(repeats):
        cpu, start = cpu_seconds(), time.perf_counter()
        encode(texts)
        timing.add(time.perf_counter() - start, cpu_seconds() - cpu)
    return timing


def time_raw_tokenizers(texts: list[str], repeats: int, method: str = "encode_batch") -> Timing:
    from tokenizers import Tokenizer

    return time_calls(getattr(Tokenizer.from_file(str(TOKENIZER)), method), texts, repeats)


def time_raw_tiktoken(texts: list[str], repeats: int) -> Timing:
    """The encoder prepare uses for this tokenizer (tiktoken, phi_hpc.data.fast_bpe), alone on
    documents in memory, on as many threads as encode_batch_fast gets: the new tokenization limit."""
    from phi_hpc.data.fast_bpe import fast_encoder
    from phi_hpc.data.tokenize import load_tokenizer

    fast, _ = fast_encoder(load_tokenizer(str(TOKENIZER)), "tiktoken")
    return time_calls(fast.encode, texts, repeats)


def time_ours(parts: list[Path], out: Path, workers: int, repeats: int, *extra: str) -> tuple[Timing, dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    timing = Timing()
    for _ in range(repeats):
        wall, cpu, manifest = run_prepare(parts, TOKENIZER, out, workers, *extra, env=env)
        timing.add(wall, cpu)
    return timing, manifest


def time_datatrove(parts_dir: Path, work: Path, workers: int, bands: int, rows: int) -> tuple[Timing, str]:
    timing = Timing()
    command = [
        sys.executable,
        __file__,
        "--run-datatrove",
        str(parts_dir),
        str(work),
        str(workers),
        str(bands),
        str(rows),
    ]
    wall, cpu, stdout = run_timed(command)
    timing.add(wall, cpu)
    return timing, stdout.strip()


def run_datatrove(parts_dir: str, work: str, workers: int, bands: int, rows: int) -> None:
    """The datatrove pipeline (its documented 4-stage MinHash recipe, then tokenization)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class CodeWords(WordTokenizer):
        """The same word definition as ours (spaCy, datatrove's English default, is far slower)."""

        pattern = re.compile(r"[A-Za-z0-9_\x80-\U0010ffff]+")

        def word_tokenize(self, text):
            return self.pattern.findall(text)

        def sent_tokenize(self, text):
            return text.splitlines()

        def span_tokenize(self, text):
            return [m.span() for m in self.pattern.finditer(text)]

    work_dir = Path(work)
    # datatrove's default shingle hash is xxhash, but with current xxhash releases datatrove 0.10.1
    # passes it str and fails ("Strings must be encoded before hashing"), so use its sha1 option.
    hash_fc = "sha1"
    config = MinhashConfig(
        n_grams=5, num_buckets=bands, hashes_per_bucket=rows, hash_config=HashConfig(precision=64, hash_fc=hash_fc)
    )
    tasks = PARTS
    # spawn instead of datatrove's default forkserver: same fresh-interpreter workers, but they are
    # children of this process, so their CPU time is counted (forkserver's are not).
    common = dict(skip_completed=False, start_method="spawn")
    logs = iter(str(work_dir / "logs" / stage) for stage in ("signatures", "buckets", "cluster", "tokenize"))
    reader = lambda: JsonlReader(parts_dir, text_key="text", id_key="id")  # noqa: E731
    stages = [
        LocalPipelineExecutor(
            [reader(), MinhashDedupSignature(str(work_dir / "sigs"), config=config, language=CodeWords())],
            tasks=tasks,
            workers=workers,
            logging_dir=next(logs),
            **common,
        ),
        LocalPipelineExecutor(
            [MinhashDedupBuckets(str(work_dir / "sigs"), str(work_dir / "buckets"), config=config)],
            tasks=config.num_buckets,
            workers=workers,
            logging_dir=next(logs),
            **common,
        ),
        LocalPipelineExecutor(
            [MinhashDedupCluster(str(work_dir / "buckets"), str(work_dir / "remove"), config=config)],
            tasks=1,
            workers=1,
            logging_dir=next(logs),
            **common,
        ),
        LocalPipelineExecutor(
            [
                reader(),
                MinhashDedupFilter(str(work_dir / "remove")),
                DocumentTokenizer(
                    str(work_dir / "tokens"), tokenizer_name_or_path=str(TOKENIZER), eos_token="<|endoftext|>"
                ),
            ],
            tasks=tasks,
            workers=workers,
            logging_dir=next(logs),
            **common,
        ),
    ]
    for stage in stages:
        stage.run()
    removed = 0
    for path in (work_dir / "remove").glob("*.remove"):
        removed += path.stat().st_size // 4
    print(f"removed {removed} documents, shingle hash {hash_fc}")


def time_minhash(texts: list[str], datasketch_docs: int, repeats: int) -> dict:
    """Signatures per CPU-second (all single-threaded) for the same documents, shingling included:
    phi-hpc with each backend (numpy, rensa) and datasketch with the same word 5-grams, built in
    Python as its docs show."""
    from datasketch import MinHash

    from phi_hpc.data.minhash import MinHasher

    subset = texts[:datasketch_docs]
    word = re.compile(rb"[A-Za-z0-9_\x80-\xff]+")
    permutations = MinHash(num_perm=256, seed=1).permutations  # shared between sketches (default scheme)

    def datasketch_all():
        for text in subset:
            words = word.findall(text.encode("utf-8"))
            shingles = [b" ".join(words[i : i + 5]) for i in range(max(1, len(words) - 4))]
            sketch = MinHash(num_perm=256, permutations=permutations, scheme="affine32")
            sketch.update_batch(shingles)

    def best(function) -> float:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            function()
            times.append(time.process_time() - start)
        return min(times)

    result = {"docs": len(subset), "datasketch_docs_per_s": len(subset) / best(datasketch_all)}
    for backend in ("numpy", "rensa"):
        hasher = MinHasher(num_perm=256, ngram=5, backend=backend)
        hasher.signatures(subset[:5])
        result[f"{backend}_docs_per_s"] = len(subset) / best(lambda h=hasher: h.signatures(subset))
    return result


def minhash_accuracy(texts: list[str], pairs: int = 300, seed: int = 7) -> dict:
    """Estimate error against exact Jaccard for both backends on the same pairs: a file and a copy
    with a random share (0-60%) of its lines dropped and up to 20 new lines, so the pairs span the
    whole similarity range (as ``tests/data/test_dedup.py`` does). Returns bias, mean absolute error,
    share within 0.05, and the same for pairs with true Jaccard >= 0.7 (where dedup decides)."""
    import random

    import numpy as np

    from phi_hpc.data.minhash import MinHasher, estimated_jaccard, word_shingles

    rng = random.Random(seed)
    candidates = [t for t in texts if len(word_shingles(t)) > 200]
    firsts, seconds, truths = [], [], []
    for _ in range(pairs):
        lines = rng.choice(candidates).splitlines(keepends=True)
        drop = rng.random() * 0.6
        other = [line for line in lines if rng.random() > drop]
        other += [f"extra_{rng.randrange(10**6)} = {rng.randrange(10**6)}\n" for _ in range(rng.randrange(20))]
        a, b = word_shingles("".join(lines)), word_shingles("".join(other))
        firsts.append("".join(lines))
        seconds.append("".join(other))
        truths.append(len(a & b) / len(a | b) if a | b else 1.0)
    truths = np.array(truths)
    result = {"pairs": pairs, "high_pairs": int((truths >= 0.7).sum())}
    for backend in ("numpy", "rensa"):
        hasher = MinHasher(num_perm=256, ngram=5, backend=backend)
        sa, sb = hasher.signatures(firsts), hasher.signatures(seconds)
        errors = np.array([estimated_jaccard(x, y) for x, y in zip(sa, sb)]) - truths
        high = errors[truths >= 0.7]
        result[backend] = {
            "bias": float(errors.mean()),
            "mae": float(np.abs(errors).mean()),
            "within_0.05": float((np.abs(errors) <= 0.05).mean()),
            "high_mae": float(np.abs(high).mean()) if len(high) else float("nan"),
        }
    return result


def minhash_lines(minhash: dict, accuracy: dict) -> list[str]:
    """The MinHash tables of the doc (also printed alone by ``--minhash-only``)."""
    from phi_hpc.data.config import DedupConfig

    default = DedupConfig().minhash
    ds = minhash["datasketch_docs_per_s"]
    label = {
        "numpy": "built-in numpy (`--set dedup.minhash=numpy`)",
        "rensa": "rensa 0.5.0 Rust permutations of our shingles (`--set dedup.minhash=rensa`)",
    }
    rows = []
    for backend in ("rensa", "numpy"):
        tag = " **(prepare's default)**" if backend == default else ""
        acc = accuracy[backend]
        rows.append(
            f"| phi-hpc `MinHasher`, {label[backend]}{tag} | {minhash[f'{backend}_docs_per_s']:.0f} | "
            f"**{minhash[f'{backend}_docs_per_s'] / ds:.1f}x** datasketch (goal >= 10) | "
            f"{acc['bias']:+.4f} | {acc['mae']:.4f} | {acc['within_0.05']:.1%} | {acc['high_mae']:.4f} |"
        )
    return [
        "| MinHash signatures, 256 permutations, shingling included (single thread) | docs per CPU-s | ratio | "
        "estimate bias | mean abs error | within 0.05 | mean abs error at J >= 0.7 |",
        "|---|---|---|---|---|---|---|",
        *rows,
        f"| datasketch 2.0 `MinHash.update_batch` (affine32) | {ds:.0f} | | | | | |",
        "",
        f"(Speed: the first {minhash['docs']} documents of the corpus. Accuracy: estimated minus exact "
        f"Jaccard of word 5-gram sets on the same {accuracy['pairs']} pairs for both backends, a file and "
        f"a copy with 0-60% of its lines dropped and up to 20 lines added; {accuracy['high_pairs']} of them "
        "at J >= 0.7. 256 permutations allow a standard deviation of sqrt(J(1-J)/256) <= 0.031.)",
    ]


def profile_map_workers(parts: list[Path], out: Path, workers: int, top: int = 12) -> tuple[float, list[tuple]]:
    """cProfile inside every map worker (``run_map`` is wrapped before the pool forks, so each
    worker profiles each of its shards); returns the profiled seconds and the functions with the
    most own time, summed over workers: (name, seconds, share)."""
    import cProfile
    import pstats

    from phi_hpc.data import executor, pipeline
    from phi_hpc.data.config import PrepareConfig

    folder = out / "profiles"
    folder.mkdir(parents=True)
    real = executor.run_map

    def profiled(context, shard_index):
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            return real(context, shard_index)
        finally:
            profiler.disable()
            profiler.dump_stats(str(folder / f"shard-{shard_index}.prof"))

    executor.run_map = profiled
    try:
        config = PrepareConfig(
            inputs=[str(p) for p in parts], tokenizer=str(TOKENIZER), output_dir=str(out / "run"), workers=workers
        )
        pipeline.prepare(config, show_progress=False)
    finally:
        executor.run_map = real
    stats = pstats.Stats(*map(str, sorted(folder.glob("*.prof"))))
    total = sum(entry[2] for entry in stats.stats.values())  # own time of every function
    rows = sorted(
        (
            (f"{Path(file).name}:{name}" if file != "~" else name, entry[2])
            for (file, line, name), entry in stats.stats.items()
        ),
        key=lambda r: -r[1],
    )
    return total, [(name, seconds, seconds / total) for name, seconds in rows[:top]]


def machine() -> str:
    return f"{os.cpu_count()} cores (`nproc` = {os.cpu_count()}), {cpu_model()}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--max-mb", type=float, default=100.0, help="corpus size cap in MB of stdlib .py files (all of them: 12.6)"
    )
    parser.add_argument("--datasketch-docs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the raw and phi-hpc timings (best kept)")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument(
        "--minhash-only",
        action="store_true",
        help="only the MinHash speed and accuracy tables, printed (the doc is not written)",
    )
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks" / "prepare.md"))
    args = parser.parse_args()

    load_start = os.getloadavg()
    files = stdlib_py_files(args.max_mb)
    texts = [p.read_text(encoding="utf-8") for p in files]
    texts = [t for t in texts if t.strip()]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"corpus: {len(texts)} stdlib .py files, {megabytes:.2f} MB; workers={args.workers}; {machine()}")
    if args.minhash_only:
        minhash = time_minhash(texts, args.datasketch_docs, args.repeats + 1)
        print("\n".join(minhash_lines(minhash, minhash_accuracy(texts))))
        print(f"load average {load_start} -> {os.getloadavg()}")
        return
    scratch = Path(tempfile.mkdtemp(prefix="phi-hpc-bench-"))
    try:
        parts = write_jsonl_parts(texts, scratch / "corpus")
        raw = time_raw_tokenizers(texts, args.repeats + 1)
        raw_fast = time_raw_tokenizers(texts, args.repeats + 1, "encode_batch_fast")
        raw_tiktoken = time_raw_tiktoken(texts, args.repeats + 1)
        ours, manifest = time_ours(parts, scratch / "ours", args.workers, args.repeats)
        ours_hf, manifest_hf = time_ours(
            parts, scratch / "ours-hf", args.workers, args.repeats, "--set", "tokenizer_backend=tokenizers"
        )
        if manifest_hf["outputs"] != manifest["outputs"]:
            raise SystemExit("the two encoders wrote different outputs: " + json.dumps(manifest_hf["outputs"]))
        lsh = manifest["lsh"]
        if args.skip_datatrove:
            datatrove, dt_info = Timing(), "skipped"
        else:
            datatrove, dt_info = time_datatrove(
                scratch / "corpus", scratch / "datatrove", args.workers, lsh["bands"], lsh["rows"]
            )
        minhash = time_minhash(texts, args.datasketch_docs, args.repeats + 1)
        accuracy = minhash_accuracy(texts)
        profiled, profile = profile_map_workers(parts, scratch / "profile", args.workers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def mbs(seconds: float) -> float:
        return megabytes / seconds

    counts = manifest["counts"]
    results = {
        "end_to_end_over_raw_wall": mbs(ours.wall) / mbs(raw.wall),
        "end_to_end_over_raw_cpu": raw.cpu / ours.cpu,
        "end_to_end_over_raw_fast_wall": mbs(ours.wall) / mbs(raw_fast.wall),
        "speedup_vs_datatrove_wall": datatrove.wall / ours.wall,
        "speedup_vs_datatrove_cpu": datatrove.cpu / ours.cpu,
        "minhash_numpy_speedup_vs_datasketch": minhash["numpy_docs_per_s"] / minhash["datasketch_docs_per_s"],
        "minhash_rensa_speedup_vs_datasketch": minhash["rensa_docs_per_s"] / minhash["datasketch_docs_per_s"],
        "end_to_end_over_raw_fast_cpu": raw_fast.cpu / ours.cpu,
        "end_to_end_over_raw_tiktoken_wall": mbs(ours.wall) / mbs(raw_tiktoken.wall),
        "end_to_end_over_raw_tiktoken_cpu": raw_tiktoken.cpu / ours.cpu,
        "tokenizers_end_to_end_over_raw_fast_wall": mbs(ours_hf.wall) / mbs(raw_fast.wall),
        "tokenizers_end_to_end_over_raw_fast_cpu": raw_fast.cpu / ours_hf.cpu,
    }
    rows = [
        ("raw tokenizers `encode_batch` (documents in memory)", raw, ""),
        ("raw tokenizers `encode_batch_fast` (no offsets; the issue's peer)", raw_fast, ""),
        ("raw tiktoken, prepare's encoder for this tokenizer (same ids; `data/fast_bpe.py`)", raw_tiktoken, ""),
        (
            "**phi-hpc prepare**, end to end (ids by tiktoken, the default here)",
            ours,
            f"**{results['end_to_end_over_raw_fast_wall']:.2f}x** raw `encode_batch_fast` MB/s (CPU: "
            f"{results['end_to_end_over_raw_fast_cpu']:.2f}x); goal >= 0.95. vs `encode_batch`: "
            f"{results['end_to_end_over_raw_wall']:.2f}x (CPU: {results['end_to_end_over_raw_cpu']:.2f}x). "
            f"vs raw tiktoken: {results['end_to_end_over_raw_tiktoken_wall']:.2f}x "
            f"(CPU: {results['end_to_end_over_raw_tiktoken_cpu']:.2f}x)",
        ),
        (
            "phi-hpc prepare `--set tokenizer_backend=tokenizers` (ids by `encode_batch_fast`; same output bytes)",
            ours_hf,
            f"{results['tokenizers_end_to_end_over_raw_fast_wall']:.2f}x raw `encode_batch_fast` MB/s (CPU: "
            f"{results['tokenizers_end_to_end_over_raw_fast_cpu']:.2f}x)",
        ),
        (
            "datatrove MinHash dedup (4 stages) + `DocumentTokenizer`",
            datatrove,
            f"phi-hpc **{results['speedup_vs_datatrove_wall']:.2f}x** faster (CPU: "
            f"{results['speedup_vs_datatrove_cpu']:.2f}x); goal >= 3",
        ),
    ]
    table = [
        f"| {name} | {t.wall:.2f} s | {mbs(t.wall):.2f} MB/s | {t.cpu:.2f} s | {mbs(t.cpu):.2f} MB/s | {ratio} |"
        for name, t, ratio in rows
    ]
    lines = [
        "# Benchmark: `phi-hpc prepare`",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}; load average (1 min) {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at the end (shared with other jobs: "
        "wall times are best of repeats, CPU seconds are the steadier comparison)",
        f"- corpus: {len(texts)} stdlib `.py` files outside site-packages/tests, {megabytes:.2f} MB, as {PARTS} "
        f".jsonl files read by both pipelines; tokenizer codegen-350M-mono; workers = {args.workers}",
        f"- phi-hpc: {counts['documents_in']} documents in, {counts['exact_duplicates']} exact + "
        f"{counts['near_duplicates']} near duplicates removed, {counts['tokens']:,} tokens; "
        f"LSH {lsh['bands']} bands x {lsh['rows']} rows. datatrove: {dt_info}; same bands x rows, 5-word "
        "shingles, same word definition (a regex; its default spaCy tokenizer is not installed)",
        f"- command: `python benchmarks/prepare.py --workers {args.workers} --repeats {args.repeats}`",
        "",
        "| what | wall | MB/s (wall) | CPU | MB per CPU-s | ratio |",
        "|---|---|---|---|---|---|",
        *table,
        "",
        *minhash_lines(minhash, accuracy),
        "",
        "End-to-end time is the wall time "
        "of a fresh `phi-hpc prepare` process: interpreter start, tokenizer load and worker start-up "
        "included; raw tokenization is the `encode_batch` call alone on documents already in memory.",
        "",
        f"Where map workers spend their time (cProfile in every worker, own time summed over the "
        f"{args.workers} workers: {profiled:.2f} s profiled; a separate run, so profiling overhead does not "
        "touch the timings above):",
        "",
        "| function | seconds | share |",
        "|---|---|---|",
        *[f"| `{name}` | {seconds:.3f} | {share:.1%} |" for name, seconds, share in profile],
        "",
        "Notes on the comparison:",
        "",
        "- For a byte-level BPE (this tokenizer, GPT-2's) phi-hpc computes the ids with tiktoken "
        "(`phi_hpc/data/fast_bpe.py`), not tokenizers. The ids are the same: the two runs above wrote the same "
        "bytes, and the benchmark stops if they do not. Tests compare the encoders on the standard library, "
        "HumanEval, MBPP and a fuzz, and every map shard checks its first documents. This is why end to end "
        "beats raw `encode_batch_fast`. The raw tiktoken row is the new limit, and the gap to it is "
        "start-up, reading, exact and MinHash dedup, packing and the manifest. With "
        "`--set tokenizer_backend=tokenizers`, prepare calls `encode_batch_fast` (ids only, no offsets).",
        "- datatrove 0.10.1 settings: `MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows)` "
        "with phi-hpc's bands x rows; its default xxhash shingle hash fails with current `xxhash` "
        '("Strings must be encoded before hashing"), so `hash_fc="sha1"`; its default English word '
        "tokenizer needs spaCy (not installed), so a regex word tokenizer equal to ours; executors use "
        '`start_method="spawn"` instead of forkserver so that their CPU time is counted.',
        "- datatrove removes more documents than phi-hpc: it merges every LSH bucket collision and "
        "normalizes text (lower case, punctuation and digits) before shingling, while phi-hpc confirms "
        "each candidate pair by its full 256-entry signature (estimated Jaccard >= 0.805, 2 standard deviations "
        "below the 0.85 threshold) and keeps "
        "identifiers' case.",
        "- MinHash: datasketch 2.0's default `affine32` scheme (`a*x+b mod 2^32` on a pre-mixed 32-bit "
        "hash) over the same word 5-grams; phi-hpc vectorizes shingling over whole batches; its default "
        "permutations are rensa's (Rust), and the built-in numpy backend uses `a*x mod 2^32` (no `+b`: a third "
        "less work).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--run-datatrove":
        run_datatrove(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
