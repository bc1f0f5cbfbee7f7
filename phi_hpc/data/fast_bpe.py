"""tiktoken as the encoder of byte-level BPE tokenizers: tokenizers' ids at about a quarter of its CPU.

Why: tokenization is most of ``prepare``'s map work (88% of the workers' time with
``encode_batch_fast``). tiktoken's Rust BPE computes the same ids for a byte-level BPE
(GPT-2, CodeGen, phi-1) in about a quarter of the CPU time. On the whole standard library it
took 0.87 s on one thread, where ``encode_batch_fast`` took 3.3 CPU-seconds.

When: only for a tokenizer of exactly this shape, checked field by field in :func:`unsupported`:

- a BPE model with no dropout, unknown token, subword prefix or suffix, or byte fallback;
- no normalizer, and tokenizers' ``ByteLevel`` pre-tokenizer with GPT-2's split pattern and no
  prefix space;
- merge ``i`` produces token id ``256 + i``: tiktoken merges by token rank, tokenizers by merge
  order, and these agree when the two orders are the same;
- added tokens that are either special (encoded as ordinary text here: see :mod:`.tokenize`) or
  runs of one whitespace character of every length from 2 up (CodeGen's 2-31 spaces and 2-9
  tabs).

Any other tokenizer is encoded by tokenizers, and the run's summary says which encoder ran.

How the added runs are matched: tokenizers splits them out before pre-tokenizing (leftmost, then
longest). Here they are the first alternatives of the split pattern. The pattern's whitespace
alternatives may not step into such a run, so a piece boundary falls where tokenizers' split does.
The ids are compared with tokenizers' in ``tests/data/test_fast_bpe.py`` (the standard library,
HumanEval, a seeded fuzz of whitespace, Unicode and special-token text). At run time the map stage
also compares each shard's first documents (:meth:`FastEncoder.disagreement`).
"""

from __future__ import annotations

import functools
import json
import os
import re

# tokenizers' ByteLevel split pattern (GPT-2's): contractions, letters, digits, other, whitespace.
_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
BACKENDS = ("auto", "tiktoken", "tokenizers")


def check_backend(backend: str) -> None:
    """ValueError unless ``backend`` is one of :data:`BACKENDS` (PrepareConfig and :func:`fast_encoder`)."""
    if backend not in BACKENDS:
        raise ValueError(f"tokenizer_backend must be one of {', '.join(BACKENDS)}, not {backend!r}")


@functools.lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character of each byte, reversed: character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def unsupported(spec: dict) -> str | None:
    """Why tiktoken cannot reproduce this tokenizer (``tokenizer.json`` as a dict), or None."""
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    checks = [
        (model.get("type") == "BPE", "the model is not BPE"),
        (not model.get("dropout") and model.get("unk_token") is None, "BPE dropout or an unknown token"),
        (not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix"), "subword affixes"),
        (not model.get("byte_fallback") and not model.get("ignore_merges"), "byte fallback or ignore_merges"),
        (spec.get("normalizer") is None, "a normalizer"),
        (spec.get("truncation") is None and spec.get("padding") is None, "truncation or padding"),
        (pre.get("type") == "ByteLevel", "the pre-tokenizer is not ByteLevel"),
        (pre.get("use_regex", True) and not pre.get("add_prefix_space"), "ByteLevel without GPT-2's pattern"),
    ]
    for ok, reason in checks:
        if not ok:
            return reason
    return _vocabulary_problem(model) or _added_problem(spec.get("added_tokens") or [], model["vocab"])


def _merge_result(merge) -> str:
    left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
    return left + right


def _vocabulary_problem(model: dict) -> str | None:
    vocab, merges, decoder = model.get("vocab") or {}, model.get("merges") or [], byte_decoder()
    if sum(1 for token, i in vocab.items() if len(token) == 1 and token in decoder and i < 256) != 256:
        return "the first 256 ids are not the 256 bytes"
    for i, merge in enumerate(merges):
        if vocab.get(_merge_result(merge)) != 256 + i:
            return f"merge {i} does not produce id {256 + i} (tiktoken merges by id)"
    return None


def _added_problem(added: list[dict], vocab: dict) -> str | None:
    runs: dict[str, set[int]] = {}
    for token in added:
        if token.get("special"):
            continue  # encoded as ordinary text (encode_special_tokens)
        content = token["content"]
        if any(token.get(flag) for flag in ("lstrip", "rstrip", "single_word")):
            return f"added token {content!r} strips or matches single words"
        if len(content) < 2 or len(set(content)) != 1 or not content.isspace() or content in vocab:
            return f"added token {content!r} is not a run of one whitespace character"
        runs.setdefault(content[0], set()).add(len(content))
    for char, lengths in runs.items():
        if lengths != set(range(2, max(lengths) + 1)):
            return f"added runs of {char!r} do not cover every length from 2 to {max(lengths)}"
    return None


def split_pattern(runs: dict[str, int]) -> str:
    """GPT-2's pattern, led by the added whitespace runs ({character: longest run}); its whitespace
    alternatives never start such a run, so pieces break where tokenizers splits added tokens out."""
    firsts = [f"{re.escape(c)}{{2,{n}}}" for c, n in sorted(runs.items())]
    if not firsts:
        return _WORDS + r"|\s+(?!\S)|\s+"
    guard = "|".join(f"{re.escape(c)}{{2}}" for c in sorted(runs))
    space = rf"(?:(?!{guard})\s)"
    return "|".join(firsts) + "|" + _WORDS + f"|{space}+(?!\\S)|{space}+"


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class FastEncoder:
    """A tiktoken ``Encoding`` equal to one byte-level BPE tokenizer; :meth:`encode` gives ids."""

    def __init__(self, spec: dict) -> None:
        import tiktoken

        decoder = byte_decoder()
        ranks = {bytes(decoder[c] for c in token): i for token, i in spec["model"]["vocab"].items() if i < 256}
        for i, merge in enumerate(spec["model"]["merges"]):
            ranks[bytes(decoder[c] for c in _merge_result(merge))] = 256 + i
        runs: dict[str, int] = {}
        for token in spec.get("added_tokens") or []:
            if not token.get("special"):
                ranks[token["content"].encode("utf-8")] = token["id"]
                runs[token["content"][0]] = max(runs.get(token["content"][0], 0), len(token["content"]))
        self.encoding = tiktoken.Encoding(
            "phi-hpc-byte-level-bpe", pat_str=split_pattern(runs), mergeable_ranks=ranks, special_tokens={}
        )

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids, on as many threads as tokenizers would use here (RAYON_NUM_THREADS)."""
        threads = int(os.environ.get("RAYON_NUM_THREADS") or 0) or _cpus()
        if threads > 1 and len(texts) > 1:
            return self.encoding.encode_ordinary_batch(texts, num_threads=threads)
        encode = self.encoding.encode_ordinary
        return [encode(text) for text in texts]

    def disagreement(self, tokenizer, texts: list[str]) -> int | None:
        """The index of the first text whose ids differ from ``tokenizer``'s, or None."""
        theirs = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        for i, (mine, reference) in enumerate(zip(self.encode(texts), theirs)):
            if mine != reference.ids:
                return i
        return None


def fast_encoder(tokenizer, backend: str) -> tuple[FastEncoder | None, str]:
    """(the tiktoken encoder or None, why): ``auto`` uses tiktoken where it reproduces ``tokenizer``
    (a loaded ``tokenizers.Tokenizer``) and is installed; ``tiktoken`` insists (ValueError if it
    cannot); ``tokenizers`` never uses it."""
    check_backend(backend)
    if backend == "tokenizers":
        return None, "tokenizers (chosen: tokenizer_backend=tokenizers)"
    spec = json.loads(tokenizer.to_str())
    reason = unsupported(spec) if tokenizer.encode_special_tokens else "special tokens are matched in text"
    if reason is None:
        try:
            return FastEncoder(spec), "tiktoken (same ids as tokenizers for this byte-level BPE)"
        except ImportError:
            reason = "tiktoken is not installed"
    if backend == "tiktoken":
        raise ValueError(f"tokenizer_backend=tiktoken cannot encode this tokenizer: {reason}")
    return None, f"tokenizers (tiktoken cannot reproduce this tokenizer: {reason})"
