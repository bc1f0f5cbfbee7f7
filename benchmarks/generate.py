"""Generation throughput: phi-hpc's batched KV-cache decoding against transformers' ``generate``.

Same model (ours imported from the transformers one), same left-padded batch of real prompts
(HumanEval prompts tokenized with phi-1's tokenizer), greedy, same number of new tokens, same
process and threads; the two are timed in alternation and the ratio is the median of per-pair
ratios (the machine is shared).

Two scenarios:

1. ``fixed``: every sequence generates exactly ``--new-tokens`` tokens (no EOS, no stop): pure
   decoding speed. The generated tokens are compared and the match rate is reported, so the two
   sides are known to do the same work.
2. ``stops``: the same with stop strings (transformers' ``stop_strings``, ours ``stop_sequences``):
   sequences finish at different times. By default (``--stops auto``) the stop strings are pieces of
   scenario 1's greedy outputs taken at staggered positions, so the rows of the batch finish spread
   over the run, as code completions of different lengths do. Ours drops finished rows from the batch; the throughput
   counted is useful tokens (up to each stop) per second.

Usage: ``python benchmarks/generate.py [--hidden 512 --layers 4 --batch 8 --new-tokens 48 --budget 20]``
Writes docs/benchmarks/generate.md (and prints the table plus one JSON line).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from checkout import REPO  # noqa: E402 (beside this script: puts this checkout first on sys.path)

from benchmarks.data import data_file  # noqa: E402  (the tests' data resolver: mirror, else upstream)
from phi_hpc.fileio import atomic_write  # noqa: E402

TOKENIZER = data_file("tokenizer")
HUMANEVAL = data_file("humaneval")

from benchmarks.train import machine  # noqa: E402  (same machine description for every benchmark)


def load_prompts(count: int, max_tokens: int, tokenizer) -> list[str]:
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as handle:
        prompts = [json.loads(line)["prompt"] for line in handle]
    chosen = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt).ids
        if len(ids) > max_tokens:  # keep the tail: the function signature and docstring end
            prompt = tokenizer.decode(ids[-max_tokens:])
        chosen.append(prompt)
        if len(chosen) == count:
            break
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128, help="prompts longer than this keep their tail")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument(
        "--stops", default="auto", help="comma-separated stop strings for scenario 2, or 'auto' (staggered, see above)"
    )
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timed runs per scenario")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks" / "generate.md")
    args = parser.parse_args()

    import torch
    import transformers
    from tokenizers import Tokenizer

    from phi_hpc.model.generate import GenerationConfig, generate_completions, generate_tokens
    from phi_hpc.model.hf import config_to_hf, load_pretrained
    from phi_hpc.model.phi import PhiConfig

    torch.set_num_threads(args.threads)
    info = machine()
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    prompts = load_prompts(args.batch, args.prompt_tokens, tokenizer)
    encoded = [tokenizer.encode(p).ids for p in prompts]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]

    config = PhiConfig(
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.hidden // 64,
        intermediate_size=4 * args.hidden,
        attn_dropout=0.0,
        resid_dropout=0.0,
    )
    hf_config = transformers.PhiConfig(**config_to_hf(config, eos_token_id=None), pad_token_id=50256)
    torch.manual_seed(0)
    theirs = transformers.PhiForCausalLM(hf_config)
    with torch.no_grad():  # fresh init gives near-uniform logits; spread them so greedy has clear winners
        for param in theirs.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    theirs.config._attn_implementation = "sdpa"
    with tempfile.TemporaryDirectory() as tmp:
        theirs.save_pretrained(tmp)
        ours = load_pretrained(tmp)
    ours = ours.to(device=args.device, dtype=dtype).eval()
    theirs = theirs.to(device=args.device, dtype=dtype).eval()
    fast_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER), pad_token="<|endoftext|>", eos_token="<|endoftext|>", padding_side="left"
    )
    batch = fast_tokenizer(prompts, return_tensors="pt", padding=True).to(args.device)
    assert [row[mask.bool()].tolist() for row, mask in zip(batch.input_ids, batch.attention_mask)] == encoded

    stops = [s for s in args.stops.split(",") if s] if args.stops != "auto" else []
    results = {}
    out_ours: list = []  # the "fixed" scenario's outputs, which "auto" stops are chosen from
    for scenario in ("fixed", "stops"):
        if scenario == "stops" and args.stops == "auto":
            stops = staggered_stops(tokenizer, out_ours, args.new_tokens)
        config = GenerationConfig(
            max_new_tokens=args.new_tokens, batch_size=args.batch, stop_sequences=stops if scenario == "stops" else []
        )
        hf_kwargs = dict(
            max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=50256, eos_token_id=None, min_new_tokens=0
        )
        if scenario == "stops":
            hf_kwargs.update(stop_strings=stops, tokenizer=fast_tokenizer)

        # Both closures are called only within this iteration, so they see this scenario's values.
        def run_ours(scenario=scenario, config=config):
            if scenario == "fixed":
                out = generate_tokens(ours, encoded, config)
                return [s[0] for s in out], sum(len(s[0]) for s in out)
            texts = generate_completions(ours, tokenizer, prompts, config)
            return [s[0] for s in texts], sum(len(tokenizer.encode(s[0]).ids) for s in texts)

        def run_theirs(scenario=scenario, hf_kwargs=hf_kwargs, stops=stops):
            with torch.no_grad():
                out = theirs.generate(**batch, **hf_kwargs)
            new = out[:, batch.input_ids.shape[1] :].tolist()
            if scenario == "fixed":
                return new, sum(len(r) for r in new)
            texts = [truncate(tokenizer.decode(r), stops) for r in new]
            return texts, sum(len(tokenizer.encode(t).ids) for t in texts)

        out_ours, useful_ours = run_ours()  # warm-up, and the outputs compared below
        out_theirs, useful_theirs = run_theirs()
        same = sum(a == b for a, b in zip(out_ours, out_theirs))
        times = {"ours": [], "transformers": []}
        cpu_times = {"ours": [], "transformers": []}  # CPU seconds: less sensitive to a busy machine
        started = time.perf_counter()
        while len(times["ours"]) < 5 or time.perf_counter() - started < args.budget:
            for name, fn in (("ours", run_ours), ("transformers", run_theirs)):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu_times[name].append(time.process_time() - c0)
            if len(times["ours"]) >= 100:
                break
        ratios = [t / o for o, t in zip(times["ours"], times["transformers"])]
        results[scenario] = {
            "useful_tokens": useful_ours,
            "useful_tokens_transformers": useful_theirs,
            "identical_outputs": f"{same}/{len(prompts)}",
            "ours_tokens_per_s": useful_ours / statistics.median(times["ours"]),
            "transformers_tokens_per_s": useful_theirs / statistics.median(times["transformers"]),
            "speedup_median_of_pairs": statistics.median(ratios),
            "speedup_cpu_time": (useful_ours / statistics.median(cpu_times["ours"]))
            / (useful_theirs / statistics.median(cpu_times["transformers"])),
            "pairs": len(ratios),
        }

    result = {
        "benchmark": "generate",
        "machine": info,
        "config": {
            "hidden": args.hidden,
            "layers": args.layers,
            "vocab": 51200,
            "batch": args.batch,
            "prompt_tokens": [len(e) for e in encoded],
            "new_tokens": args.new_tokens,
            "stops": stops,
            "dtype": args.dtype,
            "device": args.device,
            "threads": args.threads,
        },
        "parameters": ours.num_parameters(),
        "scenarios": results,
    }
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name()
    markdown = render(result)
    print(markdown)
    print(json.dumps(result))
    with atomic_write(args.output) as handle:
        handle.write(markdown)


def staggered_stops(tokenizer, outputs: list[list[int]], new_tokens: int) -> list[str]:
    """Row i's stop: the text of two of its own greedy tokens at position ~ (i + 1) / (rows + 1) of the
    run. (Another row may meet it earlier; both sides stop at the same place either way.)"""
    stops = []
    for row, ids in enumerate(outputs):
        at = max(1, (row + 1) * new_tokens // (len(outputs) + 1))
        piece = tokenizer.decode(ids[at : at + 2])
        if piece.strip() and "\ufffd" not in piece:
            stops.append(piece)
    return sorted(set(stops))


def truncate(text: str, stops: list[str]) -> str:
    from phi_hpc.model.generate import truncate_at_stop

    return truncate_at_stop(text, stops)


def render(r: dict) -> str:
    c, m = r["config"], r["machine"]
    where = f"{m['cpu']}, {m['nproc']} cores" if c["device"] == "cpu" else r.get("gpu", c["device"])
    lines = [
        "# Generation: phi-hpc batched KV-cache decoding vs transformers `generate`",
        "",
        f"Machine: {where} (nproc {m['nproc']}), Python {m['python']}, {m['date']}, 1-min load average at start "
        f"{m['load_1min_at_start']:.1f} (shared machine; runs interleaved, ratio = median of per-pair ratios).",
        "",
        f"Model: random phi-architecture model, d={c['hidden']}, {c['layers']} layers, vocab 51200 "
        f"({r['parameters'] / 1e6:.1f}M parameters), {c['dtype']} on {c['device']}, {c['threads']} threads. Batch: "
        f"{c['batch']} HumanEval prompts, {min(c['prompt_tokens'])}-{max(c['prompt_tokens'])} tokens, left-padded; "
        f"greedy; up to {c['new_tokens']} new tokens.",
        "",
        "| scenario | phi-hpc tokens/s | transformers tokens/s | speedup (wall) | speedup (CPU time) "
        "| identical outputs | pairs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "fixed": f"fixed length ({c['new_tokens']} tokens each)",
        "stops": f"stop strings {c['stops']} (useful tokens/s)",
    }
    for key, s in r["scenarios"].items():
        lines.append(
            f"| {names[key]} | {s['ours_tokens_per_s']:,.0f} | {s['transformers_tokens_per_s']:,.0f} | "
            f"**{s['speedup_median_of_pairs']:.2f}x** | {s['speedup_cpu_time']:.2f}x | "
            f"{s['identical_outputs']} | {s['pairs']} |"
        )
    lines += [
        "",
        "Tokens/s counts generated tokens (for `stops`, tokens up to each sequence's first stop string, "
        f"ours {r['scenarios']['stops']['useful_tokens']}, transformers "
        f"{r['scenarios']['stops']['useful_tokens_transformers']}). transformers keeps finished sequences in the "
        "batch (padding them) until the last one stops; phi-hpc drops them and their cache rows.",
        "",
    ]
    if r["config"]["dtype"] != "fp32":
        lines += [
            f"Identical outputs in {r['config']['dtype']}: on a random model, rounding flips near-tied argmaxes, and "
            "one flip changes the rest of a greedy continuation. `benchmarks/gpu_check.py`'s `generate` stage "
            "compares outputs in fp32, where they must match.",
            "",
        ]
    if r["config"]["device"] == "cpu":
        lines += [
            "No GPU in this run: GPU numbers are not measured. On a GPU node: "
            "`python benchmarks/generate.py --device cuda --dtype bf16 --hidden 2048 --layers 24 --batch 32`.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
