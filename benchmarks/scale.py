"""Benchmark ``phi-hpc prepare`` as the corpus grows: about 0.3, 1.2 and 5 GB of real code.

Corpus: the installed site-packages' ``.py``/``.pyi`` files (about 0.3 GB on this machine), written as
a folder of 50 MB ``.jsonl.zst`` shards (the layout of a downloaded dataset). Sizes above one pass
over the files use *variants*: every identifier of three or more characters (Python keywords
excepted) gets a variant-specific two-letter suffix, so variant ``k`` of a file shares almost no
5-word shingle with variant ``j``, yet stays code-like. Every size is made of variants (the first
size too), so token density is the same at every size and MB/s compare like with like. The smaller
sizes are prefixes of the biggest corpus' shards.

Planted near duplicates: in every shard, some documents get a copy with words replaced to hit a
target Jaccard similarity (0.5 to 0.98); the copy's exact Jaccard is computed and recorded.

Per size, each stage runs in its own process (map with ``--workers`` processes, then reduce, then
pack), and a sampler reads ``RssAnon`` of the stage's process tree from ``/proc/PID/status`` every
0.1 s: the peak anonymous memory, page cache excluded. Near-duplicate recall and precision are
measured against exact all-pairs Jaccard (over exact 64-bit shingle hash sets) on a sample: every
planted pair plus ``--sample`` random documents. Results are printed, appended to
``--results`` (JSON lines, one per size, so a partial run still reports) and written to
``docs/benchmarks/scale.md``.

Usage: ``python benchmarks/scale.py [--sizes 0.3,1.2,5] [--workers 2] [--scratch DIR]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

from checkout import REPO  # noqa: E402 (beside this script: puts this checkout first on sys.path)

SHARD_BYTES = 50_000_000
TARGETS = (0.98, 0.95, 0.92, 0.9, 0.88, 0.86, 0.84, 0.8, 0.75, 0.7, 0.6, 0.5)
PLANTS_PER_SHARD = 12
THRESHOLD = 0.85

from machine_info import cpu_model  # noqa: E402 (beside this script)


def tokenizer_file() -> Path:
    """phi-1's tokenizer (codegen-350M-mono's), found as the tests find theirs (``benchmarks/data.py``): a
    local data mirror when one is set, else the Hugging Face hub through phi-hpc's resolver."""
    from data import data_file

    return data_file("tokenizer")


_KEYWORDS = (
    "False|None|True|and|as|assert|async|await|break|class|continue|def|del|elif|else|except|finally|for|"
    "from|global|if|import|in|is|lambda|nonlocal|not|or|pass|raise|return|try|while|with|yield|self"
)
_IDENTIFIER = re.compile(rf"\b(?!(?:{_KEYWORDS})\b)([A-Za-z_][A-Za-z0-9_]{{2,}})")
_WORD = re.compile(r"[A-Za-z0-9_\x80-\U0010ffff]+")


# -- corpus --------------------------------------------------------------------------------------


def source_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["purelib"])
    return sorted(p for p in root.rglob("*") if p.suffix in (".py", ".pyi") and p.is_file())


def variant(text: str, k: int) -> str:
    suffix = "_" + chr(ord("a") + k // 26 % 26) + chr(ord("a") + k % 26)
    return _IDENTIFIER.sub(rf"\1{suffix}", text)


def exact_jaccard(a: str, b: str) -> float:
    from phi_hpc.data.minhash import word_shingles

    sa, sb = word_shingles(a), word_shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def near_copy(text: str, target: float, rng: random.Random) -> str:
    """Replace about the number of words that gives Jaccard ``target``: each replaced word changes up
    to 5 shingles, so J ~ (S - 5m) / (S + 5m) for S shingles and m replacements."""
    spans = [m.span() for m in _WORD.finditer(text)]
    m = max(1, round(len(spans) * (1 - target) / (5 * (1 + target))))
    chosen = sorted(rng.sample(range(len(spans)), min(m, len(spans))))
    out, last = [], 0
    for i in chosen:
        start, end = spans[i]
        out += [text[last:start], f"planted{rng.randrange(10**9)}"]
        last = end
    return "".join(out + [text[last:]])


def build_corpus(folder: Path, total_bytes: float, seed: int = 7) -> dict:
    """Write shards until ``total_bytes`` of text; return the planted pairs per shard."""
    import zstandard

    folder.mkdir(parents=True, exist_ok=True)
    files = source_files()
    rng = random.Random(seed)
    compressor = zstandard.ZstdCompressor(level=3)
    planted, written, shard, k = [], 0, 0, 1
    pending: list[str] = []
    shard_bytes = 0

    def flush():
        nonlocal pending, shard, shard_bytes
        if not pending:
            return
        # Copies go after their originals, at the shard's end (so every shard prefix has whole pairs).
        path = folder / f"shard-{shard:04d}.jsonl.zst"
        path.write_bytes(compressor.compress("".join(pending).encode("utf-8", "surrogatepass")))
        pending, shard_bytes = [], 0
        shard += 1

    while written < total_bytes:
        copies = []
        for path in files:
            try:
                text = variant(path.read_text(encoding="utf-8"), k)
            except (UnicodeDecodeError, OSError):
                continue
            if not text.strip():
                continue
            line = len(pending) + 1
            pending.append(json.dumps({"text": text}) + "\n")
            size = len(text.encode("utf-8", "surrogatepass"))
            shard_bytes += size
            written += size
            if 4000 < size < 40000 and len(copies) < PLANTS_PER_SHARD and rng.random() < 0.02:
                target = TARGETS[(len(planted) + len(copies)) % len(TARGETS)]
                copy = near_copy(text, target, rng)
                copies.append((line, copy, target, exact_jaccard(text, copy)))
            if shard_bytes >= SHARD_BYTES or written >= total_bytes:
                print(f"corpus: shard {shard} written ({written / 1e9:.2f} GB)", flush=True)
                name = f"shard-{shard:04d}.jsonl.zst"
                for original_line, copy, target, jaccard in copies:
                    pending.append(json.dumps({"text": copy}) + "\n")
                    written += len(copy.encode("utf-8", "surrogatepass"))
                    planted.append(
                        {
                            "original": f"{name}:{original_line}",
                            "copy": f"{name}:{len(pending)}",
                            "target": target,
                            "jaccard": jaccard,
                        }
                    )
                copies = []
                flush()
                if written >= total_bytes:
                    break
        k += 1
    flush()
    return {"planted": planted, "shards": shard, "variants": k}


# -- measuring a stage ---------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return pids


def _rss_anon_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system time of a process and its waited-for children (``/proc/PID/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


PROGRESS_SECONDS = 120


def _progress(stage: str, output_dir: Path, started: float, pids: list[int], peak_tree_kb: int) -> str:
    """A progress line for a long stage, so that a run stopped before its end still says how far it
    got and at what MB per CPU-second (the load-independent figure); shards hold ~SHARD_BYTES of text."""
    done = list(output_dir.glob(".work/*/map/shard-*.json")) if stage == "map" else []
    documents = 0
    for path in done:
        try:
            documents += json.loads(path.read_text())["documents"]
        except (OSError, ValueError, KeyError):
            pass
    cpu = sum(_cpu_seconds(p) for p in pids)
    megabytes = len(done) * SHARD_BYTES / 1e6
    return (
        f"progress {datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} {stage}: {len(done)} shards "
        f"({documents:,} documents, ~{megabytes:.0f} MB) in {time.perf_counter() - started:.0f} s wall, "
        f"{cpu:.0f} CPU-s of the live tree (~{megabytes / cpu if cpu else 0:.2f} MB per CPU-s); peak anon "
        f"{peak_tree_kb / 1024:.0f} MB; load {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def run_stage(stage: str, config_json: str) -> dict:
    """Run one stage in a child process; sample its tree's anonymous memory until it ends."""
    start = time.perf_counter()
    usage = os.times()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--stage-child", stage, config_json],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak_tree = peak_one = 0
    stop = threading.Event()
    output_dir = Path(json.loads(config_json)["output_dir"])

    def sample():
        nonlocal peak_tree, peak_one
        last_report = time.perf_counter()
        while not stop.is_set():
            pids = _tree(proc.pid)
            values = [_rss_anon_kb(p) for p in pids]
            peak_tree, peak_one = max(peak_tree, sum(values)), max(peak_one, max(values, default=0))
            if time.perf_counter() - last_report > PROGRESS_SECONDS:
                last_report = time.perf_counter()
                print(_progress(stage, output_dir, start, pids, peak_tree), flush=True)
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{err[-4000:]}")
    after = os.times()
    print(
        f"stage {stage} done in {time.perf_counter() - start:.0f} s, peak anon {peak_tree / 1024:.0f} MB "
        f"(tree); load {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        flush=True,
    )
    child = json.loads(out.strip().splitlines()[-1])
    peak_one = max(peak_one, child.get("peak_anon_inside_mb", 0) * 1024)
    peak_tree = max(peak_tree, peak_one)
    return {
        "wall": time.perf_counter() - start,
        "cpu": (after.children_user + after.children_system) - (usage.children_user + usage.children_system),
        "peak_anon_tree_mb": peak_tree / 1024,
        "peak_anon_process_mb": peak_one / 1024,
        **child,
    }


def stage_child(stage: str, config_json: str) -> None:
    """In the child: one stage through the pipeline's own functions (map with its worker pool)."""
    from phi_hpc.data import executor
    from phi_hpc.data.config import PrepareConfig
    from phi_hpc.data.pack import run_pack
    from phi_hpc.data.plan import open_run
    from phi_hpc.data.reduce import run_reduce

    config = PrepareConfig(**json.loads(config_json))
    context = open_run(config)
    baseline = _rss_anon_kb(os.getpid()) / 1024  # interpreter, numpy, tokenizer: before any stage work
    # This process' own peak, sampled every 2 ms (numpy releases the GIL in long operations), so
    # that short transient peaks of reduce and pack are not missed by the outside 0.1 s sampler.
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_anon_kb(os.getpid()))
            stop.wait(0.002)

    threading.Thread(target=sample, daemon=True).start()
    if stage == "map":
        todo = executor.unfinished_shards(context)
        pool = executor.start_pool(context, executor.effective_workers(config, len(todo))) if len(todo) > 1 else None
        try:
            executor.map_all(context, None, pool)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        result = {"shards": len(context.shards)}
    elif stage == "reduce":
        result = {"counts": run_reduce(context)["counts"]}
    else:
        result = {"outputs": run_pack(context)["outputs"]}
    stop.set()
    print(json.dumps({"baseline_anon_mb": baseline, "peak_anon_inside_mb": peak[0] / 1024, **result}))


# -- accuracy ------------------------------------------------------------------------------------


def read_origins(folder: Path, wanted: set[str]) -> dict[str, str]:
    import zstandard

    texts = {}
    by_file: dict[str, set[int]] = {}
    for origin in wanted:
        name, line = origin.rsplit(":", 1)
        by_file.setdefault(name, set()).add(int(line))
    for name, lines in by_file.items():
        raw = zstandard.ZstdDecompressor().decompress((folder / name).read_bytes(), max_output_size=1 << 31)
        for number, line in enumerate(raw.split(b"\n"), start=1):
            if number in lines:
                texts[f"{name}:{number}"] = json.loads(line)["text"]
    return texts


def accuracy(folder: Path, out: Path, planted: list[dict], sample_size: int, seed: int = 3) -> dict:
    """Pairwise recall and precision at ``THRESHOLD`` on a sample, against exact Jaccard."""
    import numpy as np
    from scipy import sparse

    from phi_hpc.data.minhash import MinHasher

    prefix = str(folder) + "/"
    cluster: dict[str, str] = {}
    for line in (out / "audit.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("removed") in ("exact_duplicate", "near_duplicate"):
            cluster[entry["document"].removeprefix(prefix)] = entry["survivor"].removeprefix(prefix)
    documents = json.loads((out / "manifest.json").read_text())["counts"]["documents_in"]
    shard_lines = {}
    for path in sorted(folder.glob("*.jsonl.zst")):
        import zstandard

        shard_lines[path.name] = (
            zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 31).count(b"\n")
        )
    rng = random.Random(seed)
    population = [f"{name}:{i}" for name, count in shard_lines.items() for i in range(1, count + 1)]
    chosen = set(rng.sample(population, min(sample_size, len(population))))
    chosen |= {p[k] for p in planted for k in ("original", "copy")}
    texts = read_origins(folder, chosen)
    names = sorted(texts)
    hasher = MinHasher()
    shingles, counts = hasher.shingle_hashes([texts[n] for n in names])
    rows = np.repeat(np.arange(len(names)), counts)
    pairs_unique = np.unique(np.stack([rows, shingles.view(np.int64)], axis=1), axis=0)
    _, columns = np.unique(pairs_unique[:, 1], return_inverse=True)
    matrix = sparse.csr_matrix(
        (np.ones(len(pairs_unique), np.float32), (pairs_unique[:, 0], columns)), shape=(len(names), columns.max() + 1)
    )
    sizes = np.asarray(matrix.sum(axis=1)).ravel()
    inter = sparse.triu(matrix @ matrix.T, k=1).tocoo()
    jaccard = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    root = [cluster.get(n, n) for n in names]
    true_pairs = {(int(a), int(b)) for a, b, j in zip(inter.row, inter.col, jaccard) if j >= THRESHOLD}
    index_of_root: dict[str, list[int]] = {}
    for i, r in enumerate(root):
        index_of_root.setdefault(r, []).append(i)
    found = {(a, b) for members in index_of_root.values() for ai, a in enumerate(members) for b in members[ai + 1 :]}
    exact_of = {(int(a), int(b)): float(j) for a, b, j in zip(inter.row, inter.col, jaccard)}
    planted_hits = {}
    position = {n: i for i, n in enumerate(names)}
    for p in planted:
        bucket = p["target"]
        a, b = sorted((position[p["original"]], position[p["copy"]]))
        hit = root[a] == root[b]
        got = planted_hits.setdefault(bucket, [0, 0])
        got[0] += hit
        got[1] += 1
    hits = len(true_pairs & found)
    return {
        "sample_documents": len(names),
        "corpus_documents": documents,
        "true_pairs": len(true_pairs),
        "found_pairs": len(found),
        "recall": hits / len(true_pairs) if true_pairs else float("nan"),
        "precision": (sum(exact_of.get(p, 0.0) >= THRESHOLD for p in found) / len(found)) if found else float("nan"),
        "found_below_0_8": sum(exact_of.get(p, 0.0) < 0.8 for p in found),
        "planted_detected_by_target": {str(k): v for k, v in sorted(planted_hits.items())},
    }


# -- one size ------------------------------------------------------------------------------------


def measure_size(gigabytes: float, corpus: Path, info: dict, scratch: Path, workers: int, sample: int) -> dict:
    """Run prepare, stage by stage, over the shards that make up ``gigabytes`` (a prefix)."""
    shards = sorted(corpus.glob("*.jsonl.zst"))[: max(1, round(gigabytes * 1e9 / SHARD_BYTES))]
    folder = scratch / f"corpus-{gigabytes}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for path in shards:
        os.link(path, folder / path.name)
    names = {p.name for p in shards}
    planted = [p for p in info["planted"] if p["original"].split(":")[0] in names]
    out = scratch / f"out-{gigabytes}"
    shutil.rmtree(out, ignore_errors=True)
    config = json.dumps(
        {
            "inputs": [str(folder)],
            "tokenizer": str(tokenizer_file()),
            "output_dir": str(out),
            "workers": workers,
            "keep_work": True,
        }
    )
    load = os.getloadavg()
    stages = {stage: run_stage(stage, config) for stage in ("map", "reduce", "pack")}
    counts = stages["reduce"]["counts"]
    work_bytes = sum(f.stat().st_size for f in (out / ".work").rglob("*") if f.is_file())
    out_bytes = sum(f.stat().st_size for f in out.glob("*") if f.is_file())
    tokenized = sum(int(o["tokens"]) for o in stages["pack"]["outputs"])
    result = {
        "gigabytes": gigabytes,
        "shards": len(shards),
        "bytes_in": counts["bytes_in"],
        "documents": counts["documents_in"],
        "tokens_out": tokenized,
        "load_at_start": [round(x, 2) for x in load],
        "stages": stages,
        "wall": sum(s["wall"] for s in stages.values()),
        "cpu": sum(s["cpu"] for s in stages.values()),
        "work_bytes": work_bytes,
        "output_bytes": out_bytes,
        "counts": counts,
        "accuracy": accuracy(folder, out, planted, sample),
    }
    result["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["mb_per_s"] = counts["bytes_in"] / 1e6 / result["wall"]
    result["tokens_per_s"] = tokenized / result["wall"]
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.3,1.2,5", help="corpus sizes in GB, comma-separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample", type=int, default=1500, help="random documents in the accuracy sample")
    parser.add_argument("--scratch", default=None, help="folder for corpora and outputs (removed at the end)")
    parser.add_argument("--results", default=str(REPO / "docs" / "benchmarks" / "scale.jsonl"))
    parser.add_argument("--keep-corpus", action="store_true")
    parser.add_argument("--report", action="store_true", help="only write the doc from --results")
    parser.add_argument(
        "--synthetic-reduce",
        type=int,
        default=0,
        metavar="DOCUMENTS",
        help="only measure the reduce stage on synthetic map outputs of this many documents",
    )
    parser.add_argument("--synthetic-shards", type=int, default=100)
    parser.add_argument(
        "--synthetic-shared",
        type=float,
        default=0.01,
        help="share of synthetic documents whose first band key repeats an earlier one (candidates)",
    )
    parser.add_argument("--note", default="", help="a sentence for the doc (what ran, what did not)")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks" / "scale.md"))
    args = parser.parse_args()
    if args.synthetic_reduce:
        scratch = Path(args.scratch or f"/tmp/phi-hpc-scale-{os.getpid()}")
        result = synthetic_reduce(args.synthetic_reduce, args.synthetic_shards, scratch, args.synthetic_shared)
        shutil.rmtree(scratch / "synthetic-inputs", ignore_errors=True)
        print(json.dumps({k: v for k, v in result.items() if k != "counts"}))
        with open(args.results.replace(".jsonl", "-reduce.jsonl"), "a") as handle:
            handle.write(json.dumps(result) + "\n")
        return
    if args.report:
        print(report(Path(args.results), Path(args.output), args.note))
        return
    sizes = [float(s) for s in args.sizes.split(",")]
    scratch = Path(args.scratch or f"/tmp/phi-hpc-scale-{os.getpid()}")
    scratch.mkdir(parents=True, exist_ok=True)
    corpus = scratch / "all-shards"
    started = time.perf_counter()
    try:
        info_path = scratch / "corpus.json"
        if not info_path.is_file():
            info = build_corpus(corpus, max(sizes) * 1e9)
            info_path.write_text(json.dumps(info))
        info = json.loads(info_path.read_text())
        print(
            f"corpus: {info['shards']} shards, {len(info['planted'])} planted pairs, "
            f"{info['variants']} variants, built in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        for size in sizes:
            result = measure_size(size, corpus, info, scratch, args.workers, args.sample)
            result["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            result["machine"] = f"{os.cpu_count()} cores, {cpu_model()}"
            with open(args.results, "a") as handle:
                handle.write(json.dumps(result) + "\n")
            print(summary_line(result), flush=True)
    finally:
        if not args.keep_corpus:
            shutil.rmtree(scratch, ignore_errors=True)
    print(report(Path(args.results), Path(args.output), args.note))


def synthetic_reduce(documents: int, shards: int, scratch: Path, shared: float = 0.01) -> dict:
    """The reduce stage alone on synthetic map outputs of ``documents`` documents (The Stack's count
    or a fraction of it), to measure its memory where the real corpus cannot go on this machine.

    A plan of ``shards`` tiny input files is opened as usual; then each shard's map outputs are
    written as the map stage would: random digests (2% exact copies), random LSH band keys (1% of
    documents share a band key with an earlier one), ``file:line`` names, and a sparse all-zero
    signature file (only candidate pairs are read from it, so its content does not matter)."""
    import numpy as np

    from phi_hpc.data.config import PrepareConfig
    from phi_hpc.data.dedup import resolve_bands
    from phi_hpc.data.plan import open_run

    inputs = scratch / "synthetic-inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for i in range(shards):
        (inputs / f"part-{i:05d}.jsonl").write_text('{"text": "x"}\n')
    out = scratch / "synthetic-out"
    shutil.rmtree(out, ignore_errors=True)
    fields = {"inputs": [str(inputs)], "tokenizer": str(tokenizer_file()), "output_dir": str(out), "workers": 1}
    config = PrepareConfig(**fields)
    context = open_run(config)
    bands, _ = resolve_bands(0.85, 256, None, None)
    rng = np.random.default_rng(0)
    per_shard = documents // shards
    for shard in context.shards:
        n = per_shard
        digests = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
        copies = rng.random(n) < 0.02
        digests[copies] = digests[rng.integers(0, n, copies.sum())]
        keys = rng.integers(0, 2**63, size=(n, bands), dtype=np.uint64)
        near = np.flatnonzero(rng.random(n) < shared)
        keys[near, 0] = keys[rng.integers(0, n, len(near)), 0]
        layout = context.layout
        layout.shard_prefix(shard.index).parent.mkdir(parents=True, exist_ok=True)
        np.lib.format.open_memmap(
            layout.shard_signatures(shard.index), mode="w+", dtype=np.uint32, shape=(n, 256)
        ).flush()
        with open(layout.shard_arrays(shard.index), "wb") as handle:
            np.savez(
                handle,
                digests=digests,
                band_keys=keys,
                token_rows=np.arange(n),
                tokens=rng.integers(50, 5000, n),
                bytes=rng.integers(200, 20000, n),
            )
        name = f"/data/the-stack/python/train-{shard.index:05d}-of-{shards:05d}.jsonl.zst"
        layout.shard_done(shard.index).write_text(
            json.dumps(
                {
                    "fingerprint": context.fingerprint,
                    "shard": shard.index,
                    "documents": n,
                    "input_bytes": n * 4000,
                    "origins": [f"{name}:{line}" for line in range(1, n + 1)],
                    "bad": [],
                    "filter_notes": [],
                }
            )
        )
    result = run_stage("reduce", json.dumps(fields))
    shutil.rmtree(out, ignore_errors=True)
    reduce_bytes = (result["peak_anon_process_mb"] - result["baseline_anon_mb"]) * 2**20
    return {
        "documents": per_shard * shards,
        "shards": shards,
        "shared": shared,
        **result,
        "bytes_per_document": reduce_bytes / (per_shard * shards),
    }


STACK_FILES = 35_000_000
STACK_TOKENS = 35_000_000_000


def extrapolate(runs: list[dict]) -> dict:
    """The Stack's Python subset (35M files, 35B tokens) from the biggest measured size, linearly:
    CPU per token (all stages, all processes); disk per token (map work + outputs, both exist until
    the run finishes); reduce memory as fixed + per-document, the per-document part being the slope
    of the reduce's peak anonymous memory between the smallest and the biggest size (a single size
    would fold fixed costs, imports and buffers, into "per document")."""
    r, small = max(runs, key=lambda run: run["documents"]), min(runs, key=lambda run: run["documents"])
    peak = r["stages"]["reduce"]["peak_anon_process_mb"] * 2**20
    if len(runs) > 1 and r["documents"] > small["documents"]:
        per_doc = (peak - small["stages"]["reduce"]["peak_anon_process_mb"] * 2**20) / (
            r["documents"] - small["documents"]
        )
    else:
        per_doc = (peak - r["stages"]["reduce"]["baseline_anon_mb"] * 2**20) / r["documents"]
    per_doc = max(per_doc, 0.0)
    tokens = r["counts"]["tokens"]
    return {
        "core_hours": r["cpu"] / tokens * STACK_TOKENS / 3600,
        "map_core_hours": r["stages"]["map"]["cpu"] / tokens * STACK_TOKENS / 3600,
        "reduce_bytes_per_document": per_doc,
        "reduce_fixed_mb": (peak - per_doc * r["documents"]) / 2**20,
        "reduce_gb": (peak + per_doc * (STACK_FILES - r["documents"])) / 1e9,
        "disk_tb": (r["work_bytes"] + r["output_bytes"]) / tokens * STACK_TOKENS / 1e12,
        "output_tb": r["output_bytes"] / tokens * STACK_TOKENS / 1e12,
    }


def report(results_path: Path, output: Path, note: str) -> str:
    """docs/benchmarks/scale.md from the results file (one JSON line per measured size)."""
    runs = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
    lines = [
        "# Benchmark: `phi-hpc prepare` at scale",
        "",
        f"- machine: {runs[0]['machine']}; shared with other jobs, load average (1, 5, 15 min) at the start "
        "and end of each size in the table",
        f"- command: `python benchmarks/scale.py --sizes {','.join(str(r['gigabytes']) for r in runs)}`; {note}",
        "",
        "| size | documents | MB/s (wall) | MB per CPU-s | tokens/s | map wall / peak anon (all processes) | "
        "reduce wall / peak anon | pack wall / peak anon | load at start -> end |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        st = r["stages"]
        lines.append(
            f"| {r['bytes_in'] / 1e9:.2f} GB | {r['documents']:,} | {r['mb_per_s']:.2f} | "
            f"{r['bytes_in'] / 1e6 / r['cpu']:.2f} | "
            f"{r['tokens_per_s']:,.0f} | {st['map']['wall']:.0f} s / {st['map']['peak_anon_tree_mb']:.0f} MB | "
            f"{st['reduce']['wall']:.1f} s / {st['reduce']['peak_anon_process_mb']:.0f} MB | "
            f"{st['pack']['wall']:.1f} s / {st['pack']['peak_anon_process_mb']:.0f} MB | "
            f"{', '.join(f'{x:.1f}' for x in r['load_at_start'])} -> "
            f"{', '.join(f'{x:.1f}' for x in r.get('load_at_end', [float('nan')] * 3))} |"
        )
    lines += [
        "",
        "Near duplicates at Jaccard >= 0.85, pairwise, against exact all-pairs Jaccard on a sample "
        "(every planted pair plus random documents):",
        "",
        "| size | sample | true pairs | found pairs | recall | precision | found pairs below 0.8 | "
        "planted pairs detected, by target Jaccard |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        a = r["accuracy"]
        planted = ", ".join(f"{k}: {v[0]}/{v[1]}" for k, v in a["planted_detected_by_target"].items())
        lines.append(
            f"| {r['bytes_in'] / 1e9:.2f} GB | {a['sample_documents']} | {a['true_pairs']} | "
            f"{a['found_pairs']} | {a['recall']:.3f} | {a['precision']:.3f} | {a['found_below_0_8']} | "
            f"{planted} |"
        )
    big = max(runs, key=lambda run: run["bytes_in"])
    x = extrapolate(runs)
    smallest = min(run["bytes_in"] for run in runs)
    smalls = [run for run in runs if run["bytes_in"] == smallest and run is not big]
    wall = " and ".join(f"{big['mb_per_s'] / small['mb_per_s']:.2f}x" for small in smalls)
    cpu = " and ".join(
        f"{(big['bytes_in'] / big['cpu']) / (small['bytes_in'] / small['cpu']):.2f}x" for small in smalls
    )
    lines += [
        "",
        f"MB/s at {big['bytes_in'] / 1e9:.2f} GB is {wall} the MB/s at {smallest / 1e9:.2f} GB "
        f"({len(smalls)} run{'s' if len(smalls) > 1 else ''} of that size) in wall time and {cpu} in MB per "
        "CPU-second (goal: within 10%; on a shared machine the CPU ratio is the one load does not move).",
        "",
        f"## Extrapolation to The Stack's Python subset ({STACK_FILES / 1e6:.0f}M files, "
        f"{STACK_TOKENS / 1e9:.0f}B tokens), from the {big['bytes_in'] / 1e9:.2f} GB run",
        "",
        f"- CPU: {x['core_hours']:,.1f} core-hours in all (map {x['map_core_hours']:,.1f}), i.e. "
        f"{x['core_hours'] / 64 * 60:,.0f} minutes on one 64-core node;",
        f"- reduce memory: {x['reduce_bytes_per_document']:.0f} anonymous bytes per document (slope of the "
        f"reduce's peak between the sizes; goal <= 200) on top of {x['reduce_fixed_mb']:.0f} MB fixed, so about "
        f"{x['reduce_gb']:.1f} GB for 35M documents;",
        f"- disk: {x['disk_tb']:.2f} TB while running (map work files + outputs), {x['output_tb']:.2f} TB of "
        "outputs after it (work is deleted on success).",
        "",
    ]
    synthetic = Path(str(results_path).replace(".jsonl", "-reduce.jsonl"))
    if synthetic.is_file():
        lines += [
            "## The reduce stage alone at The Stack's document count",
            "",
            "`python benchmarks/scale.py --synthetic-reduce N --synthetic-shards S`: synthetic map outputs of N "
            "documents (random digests with 2% exact copies, random LSH keys of which a share of documents repeat an "
            "earlier document's first band key (so many candidate pairs), `file:line` names "
            "of Stack-like length), then the real reduce stage in its own process, its anonymous memory sampled "
            "every 2 ms from inside and every 0.1 s from outside.",
            "",
            "| documents | shards | documents sharing a band key | wall | CPU | peak anon | baseline (interpreter, "
            "numpy, tokenizer) | bytes per document above baseline | run |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for line in synthetic.read_text().splitlines():
            r = json.loads(line)
            lines.append(
                f"| {r['documents']:,} | {r['shards']} | {r.get('shared', 0.01):.0%} | {r['wall']:.0f} s | "
                f"{r['cpu']:.0f} s | {r['peak_anon_process_mb']:.0f} MB | {r['baseline_anon_mb']:.0f} MB | "
                f"{r['bytes_per_document']:.0f} | {r.get('note', '')} |"
            )
        lines.append("")
    text = "\n".join(lines)
    output.write_text(text)
    return text


def summary_line(r: dict) -> str:
    stages = ", ".join(f"{k} {v['wall']:.0f} s / {v['peak_anon_tree_mb']:.0f} MB anon" for k, v in r["stages"].items())
    a = r["accuracy"]
    return (
        f"{r['gigabytes']} GB ({r['bytes_in'] / 1e9:.2f} GB, {r['documents']} docs): {r['mb_per_s']:.2f} MB/s, "
        f"{r['tokens_per_s']:.0f} tokens/s; {stages}; recall {a['recall']:.3f}, precision {a['precision']:.3f} "
        f"({a['true_pairs']} true pairs in a {a['sample_documents']}-document sample)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--stage-child":
        stage_child(sys.argv[2], sys.argv[3])
    else:
        main()
