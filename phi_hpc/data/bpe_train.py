"""``phi-hpc tokenizer train``: a CodeGen-style byte-level BPE for users without a tokenizer.

Byte-level BPE (GPT-2's scheme) never meets an unknown character and decodes losslessly. Code adds
one twist, which CodeGen (and so phi-1) adopted: indentation is long runs of spaces or tabs, and
GPT-2 spends one token per space. So, like CodeGen's vocabulary, we add whole runs as single tokens:
2 to 31 spaces and 2 to 9 tabs (38 tokens), plus ``<|endoftext|>``.
"""

from __future__ import annotations

from pathlib import Path

from phi_hpc.errors import UsageError

EOS = "<|endoftext|>"
WHITESPACE_RUNS = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]


def train_tokenizer(
    inputs: list[str],
    output_dir: str,
    vocab_size: int = 50295,
    min_frequency: int = 2,
    glob: str = "**/*.py",
    text_key: str = "text",
    max_documents: int | None = None,
) -> dict:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    from phi_hpc.data.sources import expand_inputs, read_documents
    from phi_hpc.fileio import atomic_write, write_json
    from phi_hpc.progress import progress_bar

    base_size = vocab_size - len(WHITESPACE_RUNS)
    if base_size < 256 + 1:
        raise UsageError(
            f"--vocab-size {vocab_size} is too small",
            f"it must hold 256 bytes + {EOS} + {len(WHITESPACE_RUNS)} whitespace runs",
        )
    files = expand_inputs(inputs, glob)
    bad: list = []
    stats = {"documents": 0, "bytes": 0}

    def texts(progress, task):
        for source in files:
            for document in read_documents(source, text_key, bad.append):
                if max_documents is not None and stats["documents"] >= max_documents:
                    return
                stats["documents"] += 1
                stats["bytes"] += len(document.text)
                yield document.text
            progress.advance(task, source.size)

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=base_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with progress_bar() as progress:
        task = progress.add_task("read + count pairs (merges follow)", total=sum(f.size for f in files))
        tokenizer.train_from_iterator(texts(progress, task), trainer)
    if stats["documents"] == 0:
        raise UsageError("tokenizer train: no readable documents in the inputs", "check INPUT and --glob")
    tokenizer.add_tokens([AddedToken(run, normalized=False) for run in WHITESPACE_RUNS])
    out = Path(output_dir) / "tokenizer.json"
    with atomic_write(out) as handle:
        handle.write(tokenizer.to_str(pretty=True))
    summary = {
        "tokenizer": str(out),
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "eos_id": tokenizer.token_to_id(EOS),
        "documents": stats["documents"],
        "bytes": stats["bytes"],
        "bad_inputs": len(bad),
        "first_bad_inputs": [b.to_dict() for b in bad[:20]],
    }
    write_json(Path(output_dir) / "summary.json", summary)
    return summary
