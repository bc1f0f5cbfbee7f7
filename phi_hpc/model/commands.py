"""``phi-hpc convert``: move checkpoints between transformers' Phi folders and phi-hpc.

phi-hpc's consolidated checkpoint IS a transformers ``PhiForCausalLM`` folder (config.json +
model.safetensors, see :mod:`phi_hpc.model.hf`), so conversion is a checked re-write rather than a
format change:

* ``--from-hf HF_DIR``: read any local Phi folder (e.g. microsoft/phi-1 as downloaded; sharded
  safetensors or pytorch_model.bin too) and write one ``model.safetensors`` that ``train`` (finetune)
  and ``eval run --checkpoint`` read;
* ``--to-hf CKPT``: CKPT may be a run folder, its ``checkpoints/`` folder (``latest`` is followed), a
  step folder (its ``hf/`` subfolder is used) or an HF folder; the output loads with
  ``transformers.PhiForCausalLM.from_pretrained``. ``--tokenizer`` copies tokenizer.json beside it.

The output folder is written under a temporary name and renamed when complete; ``--verify`` (on by
default) reloads it and checks it computes the same logits as the source.
"""

from __future__ import annotations

import click

from phi_hpc.errors import UsageError


@click.command("convert")
@click.option(
    "--from-hf",
    "from_hf",
    type=click.Path(file_okay=False),
    default=None,
    help="A transformers Phi folder (config.json + safetensors) to import.",
)
@click.option(
    "--to-hf",
    "to_hf",
    type=click.Path(),
    default=None,
    help="A phi-hpc checkpoint (run folder, checkpoints/ folder, step folder) to export.",
)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder to write (must not exist, or be empty, unless --force).",
)
@click.option(
    "--dtype",
    type=click.Choice(["keep", "fp32", "bf16", "fp16"]),
    default="keep",
    show_default=True,
    help="Cast the weights.",
)
@click.option(
    "--tokenizer",
    "tokenizer",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="tokenizer.json to copy into the output, so AutoTokenizer finds it there.",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Reload the output and compare its logits with the source's.",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
def convert(from_hf, to_hf, output, dtype, tokenizer, verify, force) -> None:
    """Import a transformers Phi checkpoint, or export one of ours for transformers."""
    if (from_hf is None) == (to_hf is None):
        raise UsageError(
            "convert needs exactly one of --from-hf HF_DIR or --to-hf CKPT",
            "e.g. phi-hpc convert --from-hf phi-1/ -o ckpt/",
        )
    import json
    import os
    import shutil
    import tempfile
    import time
    from pathlib import Path

    import torch

    from phi_hpc.fileio import sha256_file, write_json
    from phi_hpc.model.hf import WEIGHTS_NAME, load_pretrained, save_pretrained
    from phi_hpc.progress import progress_bar, stderr_console
    from phi_hpc.run_layout import model_checkpoint

    source_arg = from_hf if from_hf is not None else to_hf
    source = model_checkpoint(source_arg).folder
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UsageError(f"-o {out}: exists and is not empty", "choose a new folder or pass --force")
    started = time.time()
    cast = None if dtype == "keep" else dtype
    with progress_bar() as progress:
        task = progress.add_task("convert", total=3 if verify else 2)
        model = load_pretrained(source, dtype=cast)
        progress.advance(task)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            save_pretrained(model, staging)
            if tokenizer:
                shutil.copyfile(tokenizer, staging / "tokenizer.json")
            progress.advance(task)
            max_diff = None
            if verify:
                ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
                reloaded = load_pretrained(staging)
                with torch.no_grad():
                    max_diff = (model(ids).float() - reloaded(ids).float()).abs().max().item()
                del reloaded
                if max_diff != 0.0:
                    raise RuntimeError(f"converted model differs from its source (max |logit diff| {max_diff})")
                progress.advance(task)
            summary = {
                "command": "convert",
                "direction": "from-hf" if from_hf is not None else "to-hf",
                "source": str(source),
                "output": str(out),
                "parameters": model.num_parameters(),
                "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                "config": json.loads((staging / "config.json").read_text()),
                "sha256": {WEIGHTS_NAME: sha256_file(staging / WEIGHTS_NAME)},
                "verified_max_abs_logit_diff": max_diff,
                "seconds": round(time.time() - started, 3),
            }
            write_json(staging / "conversion.json", summary)
            if out.exists():
                shutil.rmtree(out)
            os.replace(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    from rich.table import Table

    table = Table(title="phi-hpc convert", show_header=False)
    for key in ("direction", "source", "output", "parameters", "dtype"):
        table.add_row(key, f"{summary[key]:,}" if isinstance(summary[key], int) else str(summary[key]))
    table.add_row("verified", "yes (identical logits)" if verify else "skipped (--no-verify)")
    stderr_console.print(table)
    click.echo(str(out / "conversion.json"))


COMMANDS = [convert]
