"""Input readers: every format yields the same documents, with provenance."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from phi_hpc.data.sources import expand_inputs, read_documents

TEXTS = ["def a():\n    return 1\n", "print('ünïcode ✓')\n", "x = '<|endoftext|>'\n"]


def _read(path, text_key="text"):
    bad = []
    (source,) = expand_inputs([str(path)], "**/*.py")
    return [(d.text, d.origin) for d in read_documents(source, text_key, bad.append)], bad


def _jsonl(key="text") -> bytes:
    return b"".join(json.dumps({key: t, "id": i}).encode() + b"\n" for i, t in enumerate(TEXTS))


def test_every_format_reads_the_same_documents(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl())
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(_jsonl()))
    frames = zstandard.ZstdCompressor()
    # Two concatenated zstd frames (what `cat a.zst b.zst` or pzstd produce) are one stream.
    (tmp_path / "a.jsonl.zst").write_bytes(frames.compress(_jsonl()[:30]) + frames.compress(_jsonl()[30:]))
    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "a.parquet", row_group_size=2)
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet"):
        documents, bad = _read(tmp_path / name)
        assert not bad, (name, bad)
        assert [t for t, _ in documents] == TEXTS, name
        assert [o for _, o in documents] == [f"{tmp_path / name}:{i}" for i in (1, 2, 3)]


def test_text_key_is_configurable(tmp_path):
    (tmp_path / "c.jsonl").write_bytes(_jsonl("content"))
    pq.write_table(pa.table({"content": TEXTS}), tmp_path / "c.parquet")
    for name in ("c.jsonl", "c.parquet"):
        documents, bad = _read(tmp_path / name, text_key="content")
        assert [t for t, _ in documents] == TEXTS and not bad


def test_directories_expand_sorted_with_the_glob(tmp_path):
    for name in ("b.py", "a.py", "sub/c.py", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n")
    files = expand_inputs([str(tmp_path)], "**/*.py")
    assert [f.path for f in files] == [str(tmp_path / n) for n in ("a.py", "b.py", "sub/c.py")]
    assert all(f.kind == "source" for f in files)


def test_a_crlf_and_bom_file_is_kept_byte_for_byte(tmp_path):
    raw = "\ufeffimport os\r\nprint(1)\r\n"
    (tmp_path / "w.py").write_bytes(raw.encode("utf-8"))
    documents, bad = _read(tmp_path / "w.py")
    assert documents == [(raw, str(tmp_path / "w.py"))] and not bad


def test_literal_eos_text_inside_a_document_cannot_forge_a_boundary(tmp_path, codegen_tokenizer, run_cli):
    from tokenizers import Tokenizer

    from tests.data.conftest import read_megatron

    (tmp_path / "in.jsonl").write_bytes(_jsonl())
    out = tmp_path / "out"
    run_cli(
        "prepare",
        str(tmp_path / "in.jsonl"),
        "--tokenizer",
        str(codegen_tokenizer),
        "-o",
        str(out),
        "--set",
        "split.validation_fraction=0",
        "--set",
        "split.shuffle=false",
        check=True,
    )
    tokenizer = Tokenizer.from_file(str(codegen_tokenizer))
    eos = tokenizer.token_to_id("<|endoftext|>")
    _, documents = read_megatron(out / "train")
    assert len(documents) == 3
    for text, doc in zip(TEXTS, documents):
        ids = doc.tolist()
        assert ids[-1] == eos and eos not in ids[:-1]
        assert tokenizer.decode(ids[:-1], skip_special_tokens=False) == text


def test_big_files_split_into_pieces_read_every_line_once_with_file_line_numbers(tmp_path):
    from phi_hpc.data.sources import split_input

    lines = []
    for i in range(500):
        if i % 97 == 5:
            lines.append(b'{"text": broken')
        elif i % 53 == 7:
            lines.append(b"")
        else:
            lines.append(json.dumps({"text": f"doc {i} " + "x" * (i % 40)}).encode())
    (tmp_path / "big.jsonl").write_bytes(b"\n".join(lines))  # no final newline
    (source,) = expand_inputs([str(tmp_path / "big.jsonl")], "*")
    whole, whole_bad = [], []
    whole = [(d.text, d.origin) for d in read_documents(source, "text", whole_bad.append)]
    for piece_bytes in (1, 37, 1000, 4096):
        pieces = split_input(source, piece_bytes)
        assert len(pieces) > 1 and sum(p.size for p in pieces) == source.size
        documents, bad = [], []
        for piece in pieces:
            documents += [(d.text, d.origin) for d in read_documents(piece, "text", bad.append)]
        assert documents == whole, piece_bytes
        assert bad == whole_bad and len(bad) == 6

    rows = [f"row {i}" for i in range(1000)]
    rows[613] = None
    pq.write_table(pa.table({"text": rows}), tmp_path / "big.parquet", row_group_size=100)
    (parquet,) = expand_inputs([str(tmp_path / "big.parquet")], "*")
    pieces = split_input(parquet, 1000)
    assert len(pieces) > 1
    documents, bad = [], []
    for piece in pieces:
        documents += [d.text for d in read_documents(piece, "text", bad.append)]
    assert documents == [r for r in rows if r is not None]
    assert [b.where for b in bad] == [f"{tmp_path / 'big.parquet'}:614"]


def test_a_folder_of_mixed_dataset_shards_is_read_by_extension(tmp_path, codegen_tokenizer, run_cli):
    """The usual layout of a downloaded dataset: a folder (with subfolders) of shards in several
    formats and no source file. Each shard is read as its extension says; stray files that are not
    shards (a README, a .json config) are not documents."""
    shards = tmp_path / "dataset"
    (shards / "part2").mkdir(parents=True)
    (shards / "a.jsonl").write_bytes(_jsonl())
    (shards / "b.jsonl.gz").write_bytes(gzip.compress(_jsonl()))
    (shards / "part2" / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl()))
    pq.write_table(pa.table({"text": TEXTS}), shards / "part2" / "d.parquet")
    (shards / "README.md").write_text("# a dataset\n")
    (shards / "dataset_info.json").write_text('{"splits": 1}\n')
    files = expand_inputs([str(shards)], "**/*.py")
    assert [(f.path, f.kind, f.compression) for f in files] == [
        (str(shards / "a.jsonl"), "jsonl", None),
        (str(shards / "b.jsonl.gz"), "jsonl", "gzip"),
        (str(shards / "part2" / "c.jsonl.zst"), "jsonl", "zstd"),
        (str(shards / "part2" / "d.parquet"), "parquet", None),
    ]
    for source in files:
        bad = []
        assert [d.text for d in read_documents(source, "text", bad.append)] == TEXTS and not bad

    out = tmp_path / "out"
    run_cli("prepare", str(shards), "--tokenizer", str(codegen_tokenizer), "-o", str(out), "--workers", "1", check=True)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    # 4 shards x 3 documents: the first shard's 3 survive, the other 9 are exact copies of them.
    assert (counts["documents_in"], counts["exact_duplicates"], counts["documents_out"], counts["bad"]) == (12, 9, 3, 0)


def test_a_source_folder_still_reads_only_its_glob(tmp_path):
    """A folder where the glob matches is a folder of source files, as before: a .jsonl fixture
    inside a source tree is not read as a dataset."""
    (tmp_path / "m.py").write_text("x = 1\n")
    (tmp_path / "fixture.jsonl").write_bytes(_jsonl())
    assert [f.path for f in expand_inputs([str(tmp_path)], "**/*.py")] == [str(tmp_path / "m.py")]
