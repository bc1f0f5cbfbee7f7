"""The downstream check of the quality filter: pretrain on the top-k documents vs a random k, equal tokens.

phi-1's claim is that a model trained on filtered ("textbook quality") code learns more per token than
one trained on unfiltered code. In small, with phi-hpc's own commands end to end:

* **Data**: the rubric-labelled site-packages files of ``benchmarks/quality_eval.py`` (labels from
  ``benchmarks/quality_rubric.py``; no LLM is reachable here). Whole top-level packages go to one of
  three disjoint parts: **A** labels the classifier is trained on, **B** the candidate pretraining
  corpus, **C** held-out validation code. No package is in two parts.
* **Classifier**: ``phi-hpc quality train A.jsonl`` (the shipped settings: hashed embedder, 200-tree
  forest regression on the 0-10 label).
* **Top-k**: ``phi-hpc quality score B.jsonl`` -> ``phi-hpc quality threshold --target-keep 0.17``
  (phi-1's keep rate) -> ``phi-hpc prepare B.jsonl --quality-scores ... --quality-threshold T``.
* **Random k**: a seeded random sample of B with the same token count (tokens counted as prepare
  counts them), through the same ``phi-hpc prepare``.
* **Pretrain**: ``phi-hpc train`` with the shipped tiny config (tiny model), one CPU process, the same
  steps, batch, sequence length and seed for both: equal tokens by construction.
* **Validation ("textbook" code)**: files of C whose rubric label is in the top 17% of the whole
  labelled pool, i.e. what the rubric calls textbook quality, never in A or B. Control: a random
  sample of C (any label): code in general.

Usage: ``python benchmarks/quality_downstream.py [--steps 300] [--seeds 1234] [--pool-files 4000]``
Prints both losses and their ratio, and writes the "Downstream check" section of
``docs/benchmarks/quality.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import site
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, also when imported by a test
import quality_eval as qe  # noqa: E402
from checkout import REPO  # noqa: E402 (puts this checkout first on sys.path)
from data import data_file  # noqa: E402

START, END = "<!-- quality_downstream:start -->", "<!-- quality_downstream:end -->"
SHARES = {"A": 0.3, "B": 0.45, "C": 0.25}


def split_packages(rows: list[dict], seed: int) -> dict[str, list[int]]:
    """Whole packages into A/B/C, in a seeded order, each to the part furthest below its share."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row["group"], []).append(i)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    parts: dict[str, list[int]] = {k: [] for k in SHARES}
    for name in names:
        part = min(SHARES, key=lambda k: len(parts[k]) / SHARES[k])
        parts[part] += groups[name]
    return parts


def phi_hpc(*args: str, log: Path) -> str:
    """Run the CLI as a user would (this checkout's package); stdout back, a one-line failure on error."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    proc = subprocess.run([sys.executable, "-m", "phi_hpc", *args], capture_output=True, text=True, env=env)
    with log.open("a") as handle:
        handle.write(f"$ phi-hpc {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n")
    if proc.returncode:
        raise SystemExit(
            f"error: phi-hpc {args[0]} {args[1] if len(args) > 1 else ''} exited {proc.returncode}; see {log}"
        )
    return proc.stdout


def write_jsonl(path: Path, rows: list[dict], with_score: bool = False) -> Path:
    """``rows`` as prepare/quality input; an existing file is kept (a resumed --keep folder: the same
    seed gives the same rows, and rewriting would change the inputs' fingerprint)."""
    if path.is_file():
        return path
    with path.open("w", encoding="utf-8") as handle:
        for r in rows:
            line = {"text": r["text"], "origin": r["path"], **({"score": r["score"]} if with_score else {})}
            handle.write(json.dumps(line) + "\n")
    return path


def token_counts(texts: list[str], tokenizer: Path) -> list[int]:
    """Tokens per document with EOS, as prepare counts them."""
    from tokenizers import Tokenizer

    return [len(e.ids) + 1 for e in Tokenizer.from_file(str(tokenizer)).encode_batch(texts)]


def build_datasets(rows, parts, tokenizer: Path, work: Path, args, log: Path) -> dict:
    """Classifier on A; top-k and random-k of B through quality score/threshold and prepare."""
    rng = random.Random(args.seed)
    a = [rows[i] for i in parts["A"]]
    b = [rows[i] for i in parts["B"]]
    a = rng.sample(a, min(args.label_files, len(a)))
    b = rng.sample(b, min(args.pool_files, len(b)))
    labels = write_jsonl(work / "labels.jsonl", a, with_score=True)
    if not (work / "model.npz").is_file():  # a kept work folder (--keep) is resumed, e.g. to add seeds
        phi_hpc("quality", "train", str(labels), "-o", str(work / "model.npz"), "--trees", str(args.trees), log=log)
    pool = write_jsonl(work / "pool.jsonl", b)
    phi_hpc(
        "quality",
        "score",
        str(pool),
        "--model",
        str(work / "model.npz"),
        "--tokenizer",
        str(tokenizer),
        "-o",
        str(work / "scores"),
        log=log,
    )
    cut = json.loads(
        phi_hpc("quality", "threshold", str(work / "scores"), "--target-keep", str(qe.KEEP), "--json", log=log)
    )
    threshold = float(cut["choice"]["threshold"])
    common = ["--tokenizer", str(tokenizer), "--workers", "1", "--set", "split.validation_fraction=0.0"]
    top = _prepare(
        [str(pool), "--quality-scores", str(work / "scores"), "--quality-threshold", str(threshold), *common],
        work / "topk",
        log,
    )
    counts = token_counts([r["text"] for r in b], tokenizer)
    order = list(range(len(b)))
    rng.shuffle(order)
    chosen, total = [], 0
    for i in order:  # random documents until the top-k's token count
        if total >= _dataset_summary(top)["tokens"]:
            break
        chosen.append(i)
        total += counts[i]
    random_rows = [b[i] for i in chosen]
    selected = _selected(b, work / "scores", threshold)
    rand = _prepare([str(write_jsonl(work / "random.jsonl", random_rows)), *common], work / "random", log)
    return {
        "labels": len(a),
        "pool": len(b),
        "threshold": threshold,
        "cut": cut["choice"],
        "topk": _dataset_summary(top),
        "random": _dataset_summary(rand),
        "topk_categories": dict(Counter(r["category"] for r in selected)),
        "random_categories": dict(Counter(r["category"] for r in random_rows)),
        "pool_categories": dict(Counter(r["category"] for r in b)),
        "topk_mean_label": float(np.mean([r["score"] for r in selected])),
        "random_mean_label": float(np.mean([r["score"] for r in random_rows])),
        "pool_mean_label": float(np.mean([r["score"] for r in b])),
    }


def _dataset_summary(manifest: dict) -> dict:
    train = next(o for o in manifest["outputs"] if o["split"] == "train")
    return {"documents": train["documents"], "tokens": train["tokens"], "counts": manifest["counts"]}


def _prepare(args: list[str], out: Path, log: Path) -> dict:
    phi_hpc("prepare", *args, "-o", str(out), log=log)
    return json.loads((out / "manifest.json").read_text())


def _selected(b: list[dict], scores_dir: Path, threshold: float) -> list[dict]:
    """The pool documents at or above the threshold (before prepare's dedup)."""
    from phi_hpc.quality.scoring import load_scores

    table = load_scores(scores_dir)
    return [
        b[int(origin.rsplit(":", 1)[1]) - 1]
        for origin, s in zip(table.ids.tolist(), table.scores.tolist())
        if s >= threshold
    ]


def pretrain(name: str, data: Path, seed: int, work: Path, args, log: Path) -> dict:
    """The shipped tiny config, one CPU process; every setting but the data is the same for both runs."""
    run_dir = work / f"run-{name}-{seed}"
    started = time.time()
    phi_hpc(
        "train",
        str(REPO / "configs" / "tiny-pretrain.yaml"),
        "--set",
        f"run_dir={run_dir}",
        "--set",
        f"data.paths=[{data}]",
        "--set",
        f"steps={args.steps}",
        "--set",
        f"seed={seed}",
        "--set",
        f"data.seq_len={args.seq_len}",
        "--set",
        f"batch.global_size={args.batch}",
        "--set",
        f"batch.micro_size={args.batch}",
        "--set",
        "validation.every=0",
        "--set",
        f"checkpoint.every={args.steps}",
        "--set",
        "checkpoint.keep_last=1",
        "--set",
        f"schedule.warmup_steps={max(1, args.steps // 15)}",
        "--set",
        "logging.console_every=50",
        log=log,
    )
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = {m["step"]: m for m in metrics if "loss" in m and m.get("step")}  # a resumed run repeats none
    losses = [steps[k]["loss"] for k in sorted(steps)]
    speeds = [m["tokens_per_s"] for m in steps.values() if m.get("tokens_per_s")]
    return {
        "run_dir": run_dir,
        "seconds": round(time.time() - started, 1),
        "final_train_loss": float(np.mean(losses[-20:])),
        "tokens_trained": args.steps * args.batch * args.seq_len,
        "tokens_per_s": float(np.median(speeds)) if speeds else None,
    }


def heldout_loss(run_dir: Path, texts: list[str], tokenizer: Path, seq_len: int, window: int) -> float:
    """Mean next-token loss over ``texts``: each file's first ``window`` tokens (with EOS when it is
    shorter), concatenated and cut into ``seq_len`` blocks (as the trainer's validation reads a prepare
    output). The window keeps the cost down (the 51200-token head is most of a tiny model's compute)
    while every file counts, rather than a few long ones."""
    import torch
    from tokenizers import Tokenizer

    from phi_hpc.model.hf import load_pretrained

    tok = Tokenizer.from_file(str(tokenizer))
    eos = tok.token_to_id("<|endoftext|>")
    ids = [i for e in tok.encode_batch(texts) for i in [*e.ids, eos][:window]]
    blocks = torch.tensor(ids[: len(ids) // seq_len * seq_len]).view(-1, seq_len)
    model = load_pretrained(run_dir)
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(blocks), 32):
            batch = blocks[start : start + 32]
            total += float(model(input_ids=batch, labels=batch)) * len(batch)
    return total / len(blocks)


def validation_sets(rows, parts, args) -> tuple[list[dict], list[dict], float]:
    """Textbook: C's files whose rubric label is in the pool's top 17%; control: random C files."""
    cut = float(np.quantile([r["score"] for r in rows], 1 - qe.KEEP))
    rng = random.Random(args.seed + 1)
    c = [rows[i] for i in parts["C"]]
    textbook = [r for r in c if r["score"] >= cut]
    return (rng.sample(textbook, min(args.val_files, len(textbook))), rng.sample(c, min(args.val_files, len(c))), cut)


def run(args, work: Path) -> dict:
    started = time.time()
    log = work / "commands.log"
    tokenizer = data_file("tokenizer")
    rows = qe.collect(Path(args.site_packages), 10**9, args.seed)
    parts = split_packages(rows, args.seed)
    textbook, control, cut = validation_sets(rows, parts, args)
    result = {
        "files": len(rows),
        "parts": {k: len(v) for k, v in parts.items()},
        "packages": {k: len({rows[i]["group"] for i in v}) for k, v in parts.items()},
        "textbook_cut": cut,
        "textbook_files": len(textbook),
        "control_files": len(control),
        "textbook_categories": dict(Counter(r["category"] for r in textbook)),
    }
    built = work / "data.json"  # a resumed --keep folder reuses its datasets (e.g. to add seeds)
    result["resumed"] = built.is_file()
    if built.is_file():
        result["data"] = json.loads(built.read_text())
    else:
        result["data"] = build_datasets(rows, parts, tokenizer, work, args, log)
        built.write_text(json.dumps(result["data"]))
    result["runs"] = []
    for seed in args.seeds:
        for name in ("topk", "random"):
            trained = pretrain(name, work / name, seed, work, args, log)
            trained["textbook_loss"] = heldout_loss(
                trained["run_dir"], [r["text"] for r in textbook], tokenizer, args.seq_len, args.val_window
            )
            trained["control_loss"] = heldout_loss(
                trained["run_dir"], [r["text"] for r in control], tokenizer, args.seq_len, args.val_window
            )
            trained.update(name=name, seed=seed, run_dir=None)
            print(json.dumps(trained), flush=True)
            result["runs"].append(trained)
    result["seconds"] = round(time.time() - started, 1)
    return result


def summary(result: dict) -> dict:
    """Mean losses over seeds, and top-k / random ratios (below 1: top-k predicts that code better)."""
    out = {}
    for key in ("textbook_loss", "control_loss"):
        top = float(np.mean([r[key] for r in result["runs"] if r["name"] == "topk"]))
        rand = float(np.mean([r[key] for r in result["runs"] if r["name"] == "random"]))
        out[key] = {"topk": top, "random": rand, "ratio": top / rand}
    return out


def per_seed_ratios(result: dict) -> dict:
    runs = {(r["name"], r["seed"]): r for r in result["runs"]}
    return {
        seed: runs[("topk", seed)]["textbook_loss"] / runs[("random", seed)]["textbook_loss"]
        for seed in sorted({r["seed"] for r in result["runs"]})
    }


def render(result: dict, args) -> str:
    d, s = result["data"], summary(result)
    seeds = ",".join(str(v) for v in args.seeds)
    lines = [
        START,
        "",
        "### Downstream check: tiny pretrain on the top-k vs a random k, equal tokens",
        "",
        f"Generated by `python benchmarks/quality_downstream.py --steps {args.steps} --seeds {seeds} "
        f"--pool-files {args.pool_files} --label-files {args.label_files} --val-files {args.val_files} --val-window {args.val_window}{' --keep DIR' if args.keep else ''}` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load avg {os.getloadavg()[0]:.1f}; {result['seconds']} s in all"
        + (
            " (resumed with `--keep DIR`: the datasets and the runs already in DIR were reused, so the seconds "
            "cover only what this invocation ran)"
            if result.get("resumed")
            else ""
        )
        + ".",
        "",
        f"Data: {result['files']} rubric-labelled site-packages files; whole packages split into A (classifier "
        f"labels) / B (pretraining pool) / C (validation): {result['packages']['A']} / "
        f"{result['packages']['B']} / {result['packages']['C']} packages, {result['parts']['A']} / "
        f"{result['parts']['B']} / {result['parts']['C']} files. Classifier: `phi-hpc quality train` on "
        f"{d['labels']} files of A ({args.trees} trees, hashed embedder, regression on the 0-10 label). Pool: "
        f"{d['pool']} files of B (mean label {d['pool_mean_label']:.2f}, {json.dumps(d['pool_categories'])}).",
        "",
        f"- **top-k**: `quality score` -> `quality threshold --target-keep 0.17` (threshold {d['threshold']:.3f}, "
        f"{d['cut']['documents']} documents) -> `prepare --quality-scores`: {d['topk']['documents']} documents, "
        f"{d['topk']['tokens']} tokens; mean rubric label {d['topk_mean_label']:.2f}, "
        f"{json.dumps(d['topk_categories'])}.",
        f"- **random k**: a seeded random sample of the same pool up to the same token count -> `prepare`: "
        f"{d['random']['documents']} documents, {d['random']['tokens']} tokens; mean rubric label "
        f"{d['random_mean_label']:.2f}, {json.dumps(d['random_categories'])}.",
        f"- **pretrain**: `phi-hpc train configs/tiny-pretrain.yaml` (tiny model: 2 layers, hidden 64, 51200 "
        f"vocabulary), one CPU process, {args.steps} steps x {args.batch} sequences x {args.seq_len} tokens = "
        f"{args.steps * args.batch * args.seq_len} tokens per run, the same for both (equal tokens), seeds "
        f"{seeds}.",
        f'- **validation**: "textbook" = {result["textbook_files"]} files of C whose rubric label is in the top '
        f"17% of all labelled files (>= {result['textbook_cut']:.2f}; "
        f"{json.dumps(result['textbook_categories'])}), in neither training set nor the classifier's labels; "
        f"control = {result['control_files']} random files of C. Loss = mean next-token loss over "
        f"{args.seq_len}-token blocks of the files' first {args.val_window} tokens, concatenated (as the trainer "
        "validates; the window bounds the cost, the 51200-token head is most of this model's compute).",
        "",
        "| run | seed | training loss (mean of the last 20 steps) | textbook validation loss | control validation "
        "loss | training tokens/s (median step) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['name']} | {r['seed']} | {r['final_train_loss']:.3f} | {r['textbook_loss']:.4f} | "
            f"{r['control_loss']:.4f} | {_fmt_speed(r.get('tokens_per_s'))} |"
        )
    t, c = s["textbook_loss"], s["control_loss"]

    def train_loss(name: str) -> float:
        return float(np.mean([r["final_train_loss"] for r in result["runs"] if r["name"] == name]))

    lines += [
        "",
        f"Mean over seeds: textbook validation loss top-k **{t['topk']:.4f}** vs random "
        f"{t['random']:.4f}: ratio **{t['ratio']:.3f}** (below 1: the top-k run predicts held-out textbook "
        f"code better); control {c['topk']:.4f} vs {c['random']:.4f}: ratio {c['ratio']:.3f}. Per seed, "
        f"textbook ratio: {', '.join(f'{k}: {v:.3f}' for k, v in per_seed_ratios(result).items())}.",
        "",
        (
            "Reading: at equal tokens the top-k run predicts held-out textbook code better than the random-k run."
            if t["ratio"] < 1
            else "Reading: at this scale the top-k run does **not** predict held-out textbook code better than the "
            f"random-k run (ratio >= 1): phi-1's effect is not reproduced by this check. Training loss, top-k "
            f"{train_loss('topk'):.2f} vs random {train_loss('random'):.2f}: a likely reason (not measured) is "
            "that a model this small, this early, learns token statistics, and the random mix (with generated "
            "and boilerplate code) teaches common tokens as well as the selected algorithm code does."
        ),
        "",
        "Scale caveat: a 7M-parameter model (mostly its embedding) on well under a million tokens; this checks "
        "the direction of phi-1's effect with phi-hpc's own commands, not its size. The textbook set is "
        "defined by the same rubric the classifier learned, so it measures whether the selected data teaches "
        "what the rubric rewards, not agreement with GPT-4.",
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def _fmt_speed(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-packages", default=site.getsitepackages()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seeds", default="1234", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--seed", type=int, default=0, help="Data seed: package split, samples.")
    parser.add_argument("--pool-files", type=int, default=4000)
    parser.add_argument("--label-files", type=int, default=2000)
    parser.add_argument("--val-files", type=int, default=128)
    parser.add_argument("--val-window", type=int, default=256, help="Tokens per validation file (its beginning).")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument(
        "--keep",
        help="Keep the work folder here (datasets, runs) instead of a temporary one; an "
        "existing one is resumed (same data arguments), e.g. to add --seeds.",
    )
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks" / "quality.md"))
    parser.add_argument("--json", help="Also write the raw results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run(args, work)
    s = summary(result)
    print(
        f"textbook validation loss: top-k {s['textbook_loss']['topk']:.4f}, random {s['textbook_loss']['random']:.4f}, "
        f"ratio {s['textbook_loss']['ratio']:.3f}"
    )
    print(
        f"control validation loss:  top-k {s['control_loss']['topk']:.4f}, random {s['control_loss']['random']:.4f}, "
        f"ratio {s['control_loss']['ratio']:.3f}"
    )
    qe.write_section(Path(args.output), render(result, args), START, END)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
