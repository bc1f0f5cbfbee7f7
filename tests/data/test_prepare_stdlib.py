"""Acceptance 1 and 2: the standard library through prepare, checked token by token with an
independent reader of the Megatron format and the tokenizer itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.data.conftest import read_megatron


@pytest.fixture(scope="module")
def stdlib_run(tmp_path_factory, stdlib_packages, codegen_tokenizer):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    out = tmp_path_factory.mktemp("stdlib") / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "phi_hpc",
            "prepare",
            *map(str, stdlib_packages),
            "--tokenizer",
            str(codegen_tokenizer),
            "-o",
            str(out),
            "--workers",
            "2",
            "--set",
            "shard_mb=0.5",
            "--set",
            "split.validation_fraction=0.05",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_every_document_round_trips_with_the_tokenizers_own_ids(stdlib_run, stdlib_packages, codegen_tokenizer):
    from tokenizers import Tokenizer

    out, _ = stdlib_run
    manifest = json.loads((out / "manifest.json").read_text())
    tokenizer = Tokenizer.from_file(str(codegen_tokenizer))
    eos = tokenizer.token_to_id("<|endoftext|>")
    assert manifest["tokenizer"]["eos_id"] == eos and manifest["dtype"] == "uint16"

    files = sorted(p for package in stdlib_packages for p in package.glob("**/*.py"))
    contents = {str(p): p.read_text(encoding="utf-8") for p in files}
    by_text: dict[str, list[str]] = {}
    for path, text in contents.items():
        by_text.setdefault(text, []).append(path)

    seen_paths = set()
    total_tokens = 0
    for output in manifest["outputs"]:
        dtype, documents = read_megatron(out / output["prefix"])
        assert dtype == np.uint16
        assert len(documents) == output["documents"]
        assert sum(len(d) for d in documents) == output["tokens"]
        total_tokens += output["tokens"]
        for doc in documents:
            ids = doc.tolist()
            assert ids[-1] == eos, "every document ends with EOS"
            assert eos not in ids[:-1], "EOS only between documents"
            text = tokenizer.decode(ids[:-1], skip_special_tokens=False)
            assert text in by_text, "decoded text is not exactly an input file"
            assert tokenizer.encode(text).ids == ids[:-1], "token ids differ from the tokenizer's own"
            seen_paths.update(by_text[text])
    assert total_tokens == manifest["counts"]["tokens"]

    # Every input file is accounted for: written, removed as a duplicate (audit) or bad (empty files).
    audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    bad = [json.loads(line) for line in (out / "bad_inputs.jsonl").read_text().splitlines()]
    removed = {entry["document"] for entry in audit}
    bad_paths = {entry["where"] for entry in bad}
    assert all(entry["reason"] == "empty file" for entry in bad)
    assert {p for p, t in contents.items() if not t.strip()} == bad_paths
    unaccounted = set(contents) - seen_paths - removed - bad_paths
    assert not unaccounted
    counts = manifest["counts"]
    assert counts["documents_in"] == len(contents) - len(bad_paths)
    assert counts["documents_out"] == counts["documents_in"] - counts["exact_duplicates"] - counts["near_duplicates"]
    assert counts["documents_out"] == sum(o["documents"] for o in manifest["outputs"])


@pytest.mark.slow
def test_manifest_describes_the_files(stdlib_run):
    from phi_hpc.fileio import sha256_file

    out, proc = stdlib_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert {o["split"] for o in manifest["outputs"]} == {"train", "validation"}
    for output in manifest["outputs"]:
        for suffix in ("bin", "idx"):
            assert sha256_file(out / f"{output['prefix']}.{suffix}") == output["sha256"][suffix]
    for key in ("documents_in", "exact_duplicates", "near_duplicates", "bad", "documents_out", "tokens"):
        assert isinstance(manifest["counts"][key], int)
    assert manifest["tokenizer"]["sha256"] and manifest["tokenizer"]["vocab_size"] == 50295
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["counts"] == manifest["counts"]
    assert "documents out" in proc.stderr  # the summary table
    assert not (out / ".work").exists(), "intermediate state is removed after success"


@pytest.mark.slow
def test_package_reader_agrees_with_independent_reader(stdlib_run):
    from phi_hpc.data.indexed import IndexedDataset

    out, _ = stdlib_run
    _, documents = read_megatron(out / "train")
    dataset = IndexedDataset(out / "train")
    assert len(dataset) == len(documents)
    for i in (0, len(documents) // 2, len(documents) - 1):
        assert np.array_equal(dataset[i], documents[i])


@pytest.mark.slow
def test_inspect_decodes_documents(stdlib_run, run_cli):
    out, _ = stdlib_run
    proc = run_cli("inspect", str(out / "validation"), "--json", "-n", "2", check=True)
    stats = json.loads(proc.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    validation = next(o for o in manifest["outputs"] if o["split"] == "validation")
    assert stats["documents"] == validation["documents"] and stats["tokens"] == validation["tokens"]
    assert len(stats["samples"]) == 2 and all(s["ends_with_eos"] for s in stats["samples"])
    assert "<|endoftext|>" in stats["samples"][0]["text"]
