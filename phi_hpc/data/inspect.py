"""``phi-hpc inspect PREFIX``: is this token file what I think it is?

Shows the size statistics of a ``.bin``/``.idx`` pair (ours or Megatron's) and decodes a few
documents, so a wrong tokenizer, a missing EOS or an empty split is visible before a job burns
GPU-hours on it.
"""

from __future__ import annotations

import json
from pathlib import Path

from phi_hpc.errors import UsageError


def dataset_statistics(dataset) -> dict:
    import numpy as np

    sizes = dataset.sizes
    stats = {
        "sequences": int(len(sizes)),
        "documents": int(len(dataset.document_indices) - 1),
        "tokens": int(sizes.sum(dtype=np.int64)),
        "dtype": str(dataset.dtype),
    }
    if len(sizes):
        stats.update(
            {
                "min_length": int(sizes.min()),
                "median_length": float(np.median(sizes)),
                "mean_length": round(float(sizes.mean()), 2),
                "max_length": int(sizes.max()),
            }
        )
    return stats


def _tokenizer_from_manifest(prefix: Path) -> str | None:
    manifest = prefix.parent / "manifest.json"
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text())["tokenizer"]["path"]
        except (ValueError, KeyError, TypeError):
            return None
    return None


def inspect_dataset(
    prefix: str, tokenizer: str | None = None, samples: int = 3, max_chars: int = 600, as_json: bool = False
) -> dict:
    from phi_hpc.data.indexed import IndexedDataset

    base = Path(prefix)
    for suffix in (".bin", ".idx"):
        if base.name.endswith(suffix):
            base = base.with_name(base.name[: -len(suffix)])
    if not Path(f"{base}.idx").is_file() or not Path(f"{base}.bin").is_file():
        raise UsageError(f"{base}.idx/.bin not found", "give the path prefix, e.g. out/train for out/train.bin")
    try:
        dataset = IndexedDataset(base)
    except ValueError as exc:
        raise UsageError(str(exc), "is this a Megatron MMapIndexedDataset?") from None
    stats = {"prefix": str(base), **dataset_statistics(dataset)}
    tokenizer_path = tokenizer or _tokenizer_from_manifest(base)
    decoded = []
    if tokenizer_path and samples > 0:
        from phi_hpc.data.tokenize import load_tokenizer

        tok = load_tokenizer(tokenizer_path)
        eos = tok.token_to_id("<|endoftext|>")
        for i in range(min(samples, len(dataset))):
            ids = dataset[i].tolist()
            decoded.append(
                {
                    "index": i,
                    "tokens": len(ids),
                    "ends_with_eos": bool(ids) and ids[-1] == eos,
                    "text": tok.decode(ids, skip_special_tokens=False),
                }
            )
        stats["eos_id"] = eos
        stats["documents_ending_with_eos_shown"] = sum(d["ends_with_eos"] for d in decoded)
    if as_json:
        import click

        click.echo(json.dumps({**stats, "samples": decoded}, indent=2))
        return stats
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from phi_hpc.progress import stderr_console

    console = Console()
    table = Table(title=f"{base}.bin/.idx", show_header=False)
    for key, value in stats.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    for sample in decoded:
        text = sample["text"]
        shown = text
        if len(text) > max_chars:
            shown = text[:max_chars] + f"\n... ({len(text) - max_chars} more characters)"
        title = f"document {sample['index']}: {sample['tokens']} tokens"
        if not sample["ends_with_eos"]:
            title += " (no EOS at the end!)"
        console.print(Panel(Text(shown), title=Text(title), expand=False))
    if not tokenizer_path:
        stderr_console.print("no tokenizer given and no manifest.json beside the files: pass --tokenizer to decode")
    return stats
