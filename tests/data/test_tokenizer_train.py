"""``phi-hpc tokenizer train``: a CodeGen-style byte-level BPE that round-trips and packs indentation."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_trained_tokenizer_round_trips_and_has_whitespace_runs(stdlib_dir, run_cli, tmp_path):
    out = tmp_path / "tok"
    proc = run_cli(
        "tokenizer",
        "train",
        str(stdlib_dir / "json"),
        str(stdlib_dir / "email"),
        "-o",
        str(out),
        "--vocab-size",
        "1200",
        check=True,
    )
    summary = json.loads(proc.stdout)
    assert summary["vocab_size"] == 1200 and summary["documents"] > 10
    assert json.loads((out / "summary.json").read_text()) == summary

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tokenizer.token_to_id("<|endoftext|>") == summary["eos_id"]
    for width in (2, 4, 8, 16, 31):
        ids = tokenizer.encode(" " * width + "x").ids
        assert tokenizer.id_to_token(ids[0]) == " " * width, "a run of spaces is one token"
    assert tokenizer.encode("\t\t\tpass").ids[0] == tokenizer.token_to_id("\t\t\t")
    text = (stdlib_dir / "json" / "decoder.py").read_text() + "\n# ünïcödé ✓ 中文\n"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text

    # And prepare accepts it (the folder form of --tokenizer).
    data = tmp_path / "data"
    run_cli("prepare", str(stdlib_dir / "json"), "--tokenizer", str(out), "-o", str(data), check=True)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == 1200 and manifest["counts"]["documents_out"] >= 4


def test_too_small_vocabulary_is_a_usage_error(stdlib_dir, run_cli, tmp_path):
    proc = run_cli("tokenizer", "train", str(stdlib_dir / "json"), "-o", str(tmp_path / "t"), "--vocab-size", "100")
    assert proc.returncode == 2 and "--vocab-size 100" in proc.stderr
