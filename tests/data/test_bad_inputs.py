"""Acceptance 4: every kind of bad input is counted and listed with file:line; --strict exits 2
with a one-line error naming the place."""

from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard


def _records(texts):
    return b"".join(json.dumps({"text": t}).encode() + b"\n" for t in texts)


@pytest.fixture
def messy_inputs(tmp_path):
    """A corpus with one of each problem, plus good documents in every format."""
    root = tmp_path / "in"
    root.mkdir()
    good = [f"def good_{i}():\n    return {i}\n" for i in range(12)]
    (root / "mixed.jsonl").write_bytes(
        _records(good[:2])  # lines 1-2 good
        + b'{"text": "unterminated\n'  # line 3: bad JSON
        + b'{"text": "caf\xe9 latin-1"}\n'  # line 4: invalid UTF-8
        + b'{"content": "no text key"}\n'  # line 5: missing text key
        + b'{"text": 42}\n'  # line 6: text is not a string
        + b"\n"  # line 7: blank (ignored)
        + _records([good[2]])
    )  # line 8 good
    (root / "empty.jsonl").write_bytes(b"")
    rng = random.Random(0)  # incompressible-ish records, so the cut lands after several zstd blocks
    full = zstandard.ZstdCompressor().compress(_records([f"x_{i} = '{rng.getrandbits(4000):x}'\n" for i in range(600)]))
    (root / "cut.jsonl.zst").write_bytes(full[: len(full) // 2])
    (root / "ok.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_records(good[3:5])))
    (root / "ok.jsonl.gz").write_bytes(gzip.compress(_records(good[5:7])))
    (root / "cut.jsonl.gz").write_bytes(gzip.compress(_records(good[7:8] * 100))[:60])
    pq.write_table(pa.table({"text": [good[8], None, good[9]]}), root / "rows.parquet")
    pq.write_table(pa.table({"body": [good[10]]}), root / "nocolumn.parquet")
    src = root / "src"
    src.mkdir()
    (src / "a.py").write_text(good[11])
    (src / "empty.py").write_bytes(b"")
    (src / "latin1.py").write_bytes(b"# line 1\n# line 2\ns = 'caf\xe9'\n")
    inputs = [
        str(root / name)
        for name in (
            "mixed.jsonl",
            "empty.jsonl",
            "cut.jsonl.zst",
            "ok.jsonl.zst",
            "ok.jsonl.gz",
            "cut.jsonl.gz",
            "rows.parquet",
            "nocolumn.parquet",
        )
    ]
    return inputs + [str(src)], root


def test_every_bad_input_is_counted_and_located(messy_inputs, codegen_tokenizer, run_cli, tmp_path):
    inputs, root = messy_inputs
    out = tmp_path / "out"
    proc = run_cli(
        "prepare", *inputs, "--tokenizer", str(codegen_tokenizer), "-o", str(out), "--workers", "1", check=True
    )
    bad = [json.loads(line) for line in (out / "bad_inputs.jsonl").read_text().splitlines()]
    found = {(entry["where"], entry["reason"].split(" (")[0]) for entry in bad}
    expected = {
        (f"{root}/mixed.jsonl:3", "bad JSON"),
        (f"{root}/mixed.jsonl:4", "invalid UTF-8"),
        (f"{root}/mixed.jsonl:5", "missing text key 'text'"),
        (f"{root}/mixed.jsonl:6", "text key 'text' is int, not a string"),
        (f"{root}/empty.jsonl", "empty file"),
        (f"{root}/cut.jsonl.gz:1", "truncated or corrupt gzip stream"),
        (f"{root}/rows.parquet:2", "missing text"),
        (f"{root}/nocolumn.parquet", "no column 'text'"),
        (f"{root}/src/empty.py", "empty file"),
        (f"{root}/src/latin1.py:3", "invalid UTF-8"),
    }
    truncated = [e for e in bad if e["where"].startswith(f"{root}/cut.jsonl.zst:")]
    assert len(truncated) == 1 and truncated[0]["reason"].startswith("truncated zstd stream")
    assert expected <= found and len(bad) == len(expected) + 1, bad

    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["bad"] == len(bad)
    # Every good document is read: 10 of the hand-written ones (good[7] and good[10] sit in broken
    # files) plus the records of the cut .zst that lie before the cut.
    zst_good = int(truncated[0]["where"].rsplit(":", 1)[1]) - 1
    assert 0 < zst_good < 600
    assert counts["documents_in"] == 10 + zst_good
    assert f"{root}/mixed.jsonl:3: bad JSON" in proc.stderr  # reported, with file:line, in the summary


def test_strict_makes_the_first_bad_input_a_one_line_error(messy_inputs, codegen_tokenizer, run_cli, tmp_path):
    inputs, root = messy_inputs
    out = tmp_path / "out"
    proc = run_cli(
        "prepare", *inputs, "--tokenizer", str(codegen_tokenizer), "-o", str(out), "--strict", "--workers", "2"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"{root}/mixed.jsonl:3: bad JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "manifest.json").exists() and not list(out.glob("*.bin"))


def test_usage_errors_are_one_line(codegen_tokenizer, run_cli, tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    cases = [
        (["prepare", str(tmp_path / "missing"), "--tokenizer", str(codegen_tokenizer), "-o", "o"], "does not exist"),
        (["prepare", str(tmp_path), "--tokenizer", str(tmp_path / "nope.json"), "-o", "o"], "--tokenizer"),
        (
            ["prepare", str(tmp_path), "--tokenizer", str(codegen_tokenizer), "-o", "o", "--set", "dedup.bands=3"],
            "bands",
        ),
        (
            ["prepare", str(tmp_path), "--tokenizer", str(codegen_tokenizer), "-o", "o", "--set", "glob=*.rs"],
            "no files match",
        ),
        (
            ["prepare", str(tmp_path), "--tokenizer", str(codegen_tokenizer), "-o", "o", "--stage", "reduce"],
            "map stage incomplete",
        ),
    ]
    for args, needle in cases:
        proc = run_cli(*args)
        assert proc.returncode != 0, args
        assert proc.stderr.strip().count("\n") == 0 and needle in proc.stderr, (args, proc.stderr)


def test_nothing_usable_is_an_error_not_an_empty_dataset(codegen_tokenizer, run_cli, tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "bad.jsonl").write_bytes(b"not json\n")
    out = tmp_path / "out"
    proc = run_cli(
        "prepare",
        str(tmp_path / "empty.jsonl"),
        str(tmp_path / "bad.jsonl"),
        "--tokenizer",
        str(codegen_tokenizer),
        "-o",
        str(out),
    )
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "no documents left to write: 0 read, 2 bad inputs" in proc.stderr
    assert len((out / "bad_inputs.jsonl").read_text().splitlines()) == 2
    assert not (out / "manifest.json").exists() and not (out / "train.bin").exists()
