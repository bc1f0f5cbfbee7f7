"""tiktoken as prepare's encoder (phi_hpc.data.fast_bpe): the same ids as tokenizers, or not used.

The ids are compared with tokenizers' own (``encode_special_tokens``, as prepare loads it) on real
code (the whole standard library, HumanEval, MBPP) and on a seeded fuzz built to hit the places
where the two could part: runs of spaces and tabs around CodeGen's 2-31-space and 2-9-tab added
tokens, other Unicode whitespace, contractions, digits, letters of other scripts, emoji and the
literal end-of-text marker."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from phi_hpc.data import pipeline
from phi_hpc.data.config import PrepareConfig
from phi_hpc.data.fast_bpe import fast_encoder, unsupported
from phi_hpc.data.tokenize import DocumentEncoder, load_tokenizer
from phi_hpc.errors import PhiError, UsageError
from tests.datafiles import data_file

PIECES = [
    " ",
    "\t",
    "\n",
    "\r\n",
    "\u00a0",
    "\u3000",
    "\u2028",
    "\x0b",
    "\x0c",
    "\u200b",
    "a",
    "Zq",
    "é",
    "ß",
    "中文",
    "7",
    "٣",
    "'s",
    "'ll",
    "'",
    "_",
    "-",
    "()",
    ":",
    "#",
    "<|endoftext|>",
    "<|",
    "|>",
    "😀",
    "def",
]


def fuzz_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = [
            rng.choice(PIECES) * rng.choice([1, 1, 1, 2, 3, 5, 9, 10, 17, 31, 32, 33, 40, 63])
            for _ in range(rng.randint(0, 30))
        ]
        texts.append("".join(parts))
    return texts


def code_texts(stdlib_dir) -> list[str]:
    texts = [
        p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(stdlib_dir.rglob("*.py"))
        if "site-packages" not in p.parts
    ]
    with gzip.open(data_file("humaneval"), "rt") as handle:
        for line in handle:
            problem = json.loads(line)
            texts.append(problem["prompt"] + problem["canonical_solution"] + problem["test"])
    with open(data_file("mbpp"), encoding="utf-8") as handle:
        texts += [json.loads(line)["code"] for line in handle]
    return texts


def reference_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


@pytest.fixture(scope="module", params=["tokenizer", "gpt2-tokenizer"])
def tokenizer_path(request):
    return str(data_file(request.param))


def test_the_byte_level_tokenizers_get_the_fast_encoder(tokenizer_path):
    fast, why = fast_encoder(load_tokenizer(tokenizer_path), "auto")
    assert fast is not None, why
    assert why.startswith("tiktoken")


def test_ids_equal_tokenizers_on_real_code(tokenizer_path, stdlib_dir):
    tokenizer = load_tokenizer(tokenizer_path)
    fast, _ = fast_encoder(tokenizer, "auto")
    texts = code_texts(stdlib_dir)
    assert len(texts) > 1500 and sum(map(len, texts)) > 10_000_000
    differing = []
    for start in range(0, len(texts), 100):  # in chunks: two id lists of 10 MB of code would be ~1 GB
        chunk = texts[start : start + 100]
        pairs = zip(fast.encode(chunk), reference_ids(tokenizer, chunk))
        differing += [start + i for i, (a, b) in enumerate(pairs) if a != b]
    assert differing == [], f"{len(differing)} documents differ, first {differing[:5]}"


def test_ids_equal_tokenizers_on_a_whitespace_and_unicode_fuzz(tokenizer_path):
    tokenizer = load_tokenizer(tokenizer_path)
    fast, _ = fast_encoder(tokenizer, "auto")
    texts = fuzz_texts(20_000)
    mine, theirs = fast.encode(texts), reference_ids(tokenizer, texts)
    differing = [texts[i] for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]
    assert differing == [], f"{len(differing)} differ, first {differing[:3]!r}"
    # the fuzz does reach the added whitespace tokens and the split end-of-text marker
    assert any(i >= 50257 for ids in theirs for i in ids) or "codegen" not in tokenizer_path


def test_ids_equal_tokenizers_on_megabyte_long_pieces(tokenizer_path):
    """Minified or encoded blobs: one regex piece of a million characters (BPE's worst case)."""
    import base64

    tokenizer = load_tokenizer(tokenizer_path)
    fast, _ = fast_encoder(tokenizer, "auto")
    blob = base64.b64encode(random.Random(1).randbytes(300_000)).decode()
    texts = ["a" * 1_000_000, blob, "7" * 300_000, "=-" * 200_000, "x = " + blob + "\n"]
    assert fast.encode(texts) == reference_ids(tokenizer, texts)


def _spec(path: str) -> dict:
    return json.loads(load_tokenizer(path).to_str())


@pytest.mark.parametrize(
    "change,reason",
    [
        (lambda s: s.update(normalizer={"type": "NFC"}), "a normalizer"),
        (lambda s: s["model"].update(dropout=0.1), "BPE dropout"),
        (lambda s: s["pre_tokenizer"].update(add_prefix_space=True), "ByteLevel without"),
        (lambda s: s["model"]["merges"].reverse(), "does not produce id"),
        (lambda s: s["added_tokens"].pop(-2), "do not cover every length"),  # no 3-tab token
        (lambda s: s["added_tokens"].append({"id": 60000, "content": "foo", "special": False}), "not a run"),
    ],
)
def test_other_tokenizer_shapes_are_left_to_tokenizers(change, reason):
    spec = _spec(str(data_file("tokenizer")))
    assert unsupported(spec) is None
    change(spec)
    assert reason in unsupported(spec)


def test_the_backend_can_be_chosen_and_an_impossible_choice_is_a_usage_error(tmp_path):
    path = str(data_file("tokenizer"))
    assert DocumentEncoder(path, 50256, "tokenizers").fast is None
    assert DocumentEncoder(path, 50256, "tiktoken").fast is not None
    from tokenizers import Tokenizer, models, pre_tokenizers

    other = Tokenizer(models.WordLevel({"a": 0, "<|endoftext|>": 1}, unk_token="a"))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    other.save(str(tmp_path / "tokenizer.json"))
    assert DocumentEncoder(str(tmp_path / "tokenizer.json"), 1, "auto").fast is None
    with pytest.raises(UsageError, match="tokenizer_backend=tiktoken: .*the model is not BPE"):
        DocumentEncoder(str(tmp_path / "tokenizer.json"), 1, "tiktoken")
    with pytest.raises(ValueError, match="tokenizer_backend must be"):
        PrepareConfig(tokenizer_backend="fast")


def test_prepare_writes_the_same_bytes_with_either_encoder_and_says_which_ran(tmp_path, stdlib_packages):
    written = {}
    for backend in ("tokenizers", "auto"):
        config = PrepareConfig(
            inputs=[str(p) for p in stdlib_packages[:4]],
            tokenizer=str(data_file("tokenizer")),
            output_dir=str(tmp_path / backend),
            workers=2,
            shard_mb=0.2,
            tokenizer_backend=backend,
        )
        pipeline.prepare(config, show_progress=False)
        out = tmp_path / backend
        written[backend] = {n: (out / n).read_bytes() for n in ("train.bin", "train.idx", "validation.bin")}
        summary = json.loads((out / "summary.json").read_text())
        assert summary["token_ids_by"].startswith("tiktoken" if backend == "auto" else "tokenizers")
    assert len(written["auto"]["train.bin"]) > 500_000  # about 300K tokens
    assert written["auto"] == written["tokenizers"]


def test_the_map_stage_refuses_ids_that_differ_from_tokenizers(tmp_path, stdlib_packages, monkeypatch):
    from phi_hpc.data.fast_bpe import FastEncoder

    real = FastEncoder.encode
    monkeypatch.setattr(FastEncoder, "encode", lambda self, texts: [ids[:-1] for ids in real(self, texts)])
    config = PrepareConfig(
        inputs=[str(stdlib_packages[0])],
        tokenizer=str(data_file("tokenizer")),
        output_dir=str(tmp_path / "out"),
        workers=1,
        tokenizer_backend="tiktoken",
    )
    DocumentEncoder.cached.cache_clear()
    try:
        with pytest.raises(PhiError, match=r"\.py(:\d+)?: tiktoken's token ids differ from tokenizers'"):
            pipeline.prepare(config, show_progress=False)
    finally:
        DocumentEncoder.cached.cache_clear()
    assert not (tmp_path / "out" / "train.bin").exists()
