"""Document filters (the quality/decontamination contract), the seeded split and --max-documents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from phi_hpc.data import map_stage, pack, pipeline
from phi_hpc.data.config import PrepareConfig, SplitConfig
from phi_hpc.data.filters import FILTERED, FLAGGED, SCORED, FilterNote, Verdict, audit_order, count_by_filter
from phi_hpc.errors import UsageError
from tests.data.conftest import read_megatron


class DropsTests:
    """Drops documents that look like unit tests (a stand-in for the quality classifier)."""

    name = "quality"

    def evaluate(self, texts):
        return [
            Verdict(keep=False, reason="looks like a test file", score=0.1)
            if "unittest" in t
            else Verdict(keep=True, score=0.9)
            for t in texts
        ]


class FlagsEverySecond:
    """Report-only: keeps everything but gives a reason for some (like --decontaminate-report-only)."""

    name = "decontamination"

    def evaluate(self, texts):
        return [
            Verdict(keep=True, reason="13-gram overlap with HumanEval/0", score=0.5)
            if "f_1_" in t or "f_4_" in t
            else Verdict(keep=True)
            for t in texts
        ]


class PluggedFilters:
    """The filter source the test plugs into prepare (the CLI plugs in phi_hpc.quality.stages.PrepareFilters)."""

    def content_hashes(self, config):
        return {}

    def build(self, config):
        return [DropsTests(), FlagsEverySecond()]


def _corpus(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for i in range(30):
        body = "import unittest\n" if i % 3 == 0 else ""
        (root / f"m{i:02d}.py").write_text(body + "\n".join(f"def f_{i}_{j}(): return {i * j}" for j in range(40)))
    return root


def test_filters_drop_count_and_audit(tmp_path, codegen_tokenizer):
    root = _corpus(tmp_path)
    config = PrepareConfig(
        inputs=[str(root)],
        tokenizer=str(codegen_tokenizer),
        output_dir=str(tmp_path / "out"),
        workers=1,
        split=SplitConfig(validation_fraction=0.2),
    )
    manifest = pipeline.prepare(config, show_progress=False, filters=PluggedFilters())
    assert manifest["counts"]["filtered"] == {"quality": 10}
    assert manifest["counts"]["flagged"] == {"decontamination": 2}  # m01 and m04
    assert manifest["counts"]["documents_out"] == 20
    audit = [json.loads(line) for line in (tmp_path / "out" / "audit.jsonl").read_text().splitlines()]
    removed = [e for e in audit if e["removed"]]
    flagged = [e for e in audit if e["removed"] is None and "flagged_by" in e]
    scored = [e for e in audit if e["removed"] is None and "scored_by" in e]
    assert len(removed) == 10
    assert all(e["removed"] == "filtered" and e["filter"] == "quality" and e["score"] == 0.1 for e in removed)
    assert {e["document"].rsplit("/", 1)[1] for e in removed} == {f"m{i:02d}.py" for i in range(0, 30, 3)}
    assert {e["document"].rsplit("/", 1)[1] for e in flagged} == {"m01.py", "m04.py"}
    assert all(e["flagged_by"] == "decontamination" and e["reason"].startswith("13-gram") for e in flagged)
    # Every kept document's quality score is in the audit too (to choose a threshold afterwards).
    assert len(scored) == 20 and all(e["scored_by"] == "quality" and e["score"] == 0.9 for e in scored)
    assert {e["document"] for e in scored}.isdisjoint(e["document"] for e in removed)
    assert [o["documents"] for o in manifest["outputs"]] == [16, 4]


def test_each_verdict_becomes_one_kind_of_note_and_the_audit_lists_them_in_one_order():
    notes = [
        FilterNote.of(3, "quality", Verdict(keep=True, score=0.9)),
        FilterNote.of(3, "decontamination", Verdict(keep=True, reason="13-gram overlap", score=0.2)),
        FilterNote.of(3, "late", Verdict(keep=False, reason="no", score=0.0)),
    ]
    assert [n.kind for n in notes] == [SCORED, FLAGGED, FILTERED]
    assert FilterNote.of(3, "quality", Verdict(keep=True)) is None, "a plain keep says nothing"
    assert [n.kind for n in audit_order(notes, kept=False)] == [FLAGGED, FILTERED], "no score for a dropped one"
    assert [n.kind for n in audit_order(notes[:2], kept=True)] == [FLAGGED, SCORED]
    assert count_by_filter(notes, FILTERED) == {"late": 1} and count_by_filter(notes, FLAGGED) == {"decontamination": 1}


def test_filter_options_without_a_filter_source_are_an_error_not_an_unfiltered_run(tmp_path, codegen_tokenizer):
    config = PrepareConfig(
        inputs=[str(_corpus(tmp_path))],
        tokenizer=str(codegen_tokenizer),
        output_dir=str(tmp_path / "out"),
        decontaminate=True,
    )
    with pytest.raises(UsageError, match="none plugged in"):
        pipeline.prepare(config, show_progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_quality_model_and_stored_scores_together_are_a_usage_error(tmp_path, codegen_tokenizer, run_cli):
    proc = run_cli(
        "prepare",
        str(_corpus(tmp_path)),
        "--tokenizer",
        str(codegen_tokenizer),
        "-o",
        str(tmp_path / "out"),
        "--quality-model",
        str(tmp_path / "model.npz"),
        "--quality-scores",
        str(tmp_path / "scores"),
    )
    assert proc.returncode == 2 and "both given" in proc.stderr and "Traceback" not in proc.stderr


def test_the_pipeline_never_imports_the_filters_it_runs():
    """Filters plug in through phi_hpc.data.filters; only the prepare command (data/commands.py) names
    quality's, and the config nests quality's decontamination settings (a plain dataclass)."""
    import ast

    from tests.conftest import REPO_ROOT

    allowed = {"commands.py": "phi_hpc.quality.stages", "config.py": "phi_hpc.quality.decontamination_config"}
    found = []
    for path in sorted((REPO_ROOT / "phi_hpc" / "data").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [
                f"{path.name}: {n}" for n in names if n.startswith("phi_hpc.quality") and allowed.get(path.name) != n
            ]
    assert found == []


def test_split_is_seeded_whole_documents():
    a = pack.split_documents(100, 0.1, seed=5, shuffle=True)
    b = pack.split_documents(100, 0.1, seed=5, shuffle=True)
    c = pack.split_documents(100, 0.1, seed=6, shuffle=True)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["validation"], c["validation"])
    assert len(a["validation"]) == 10 and len(a["train"]) == 90
    assert sorted(np.concatenate([a["train"], a["validation"]]).tolist()) == list(range(100))
    assert len(pack.split_documents(3, 0.01, 1, False)["validation"]) == 1, "tiny runs still validate"
    assert "validation" not in pack.split_documents(50, 0.0, 1, False)


def test_max_documents_keeps_the_first_n(tmp_path, codegen_tokenizer, run_cli):
    root = _corpus(tmp_path)
    out = tmp_path / "out"
    run_cli(
        "prepare",
        str(root),
        "--tokenizer",
        str(codegen_tokenizer),
        "-o",
        str(out),
        "--max-documents",
        "7",
        "--set",
        "split.validation_fraction=0",
        "--set",
        "split.shuffle=false",
        check=True,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["documents_in"] == 7 and manifest["counts"]["documents_out"] == 7
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(codegen_tokenizer))
    _, documents = read_megatron(out / "train")
    texts = [tokenizer.decode(d.tolist()[:-1]) for d in documents]
    assert texts == [(root / f"m{i:02d}.py").read_text() for i in range(7)], "input order kept without shuffle"


def test_decontaminate_drops_a_leaked_benchmark_solution(
    tmp_path, codegen_tokenizer, humaneval_path, stdlib_dir, run_cli, shared_data
):
    """The real decontamination stage (phi_hpc.quality) wired in through --decontaminate."""
    import gzip

    problem = json.loads(gzip.open(humaneval_path, "rt").readline())
    root = tmp_path / "in"
    root.mkdir()
    for path in sorted((stdlib_dir / "json").glob("*.py")):
        (root / path.name).write_text(path.read_text())
    (root / "leak.py").write_text("# found online\n" + problem["prompt"] + problem["canonical_solution"])
    for flag, expect_removed in (
        (["--decontaminate"], True),
        (["--decontaminate", "--decontaminate-report-only"], False),
    ):
        out = tmp_path / f"out{len(flag)}"
        run_cli(
            "prepare",
            str(root),
            "--tokenizer",
            str(codegen_tokenizer),
            "-o",
            str(out),
            *flag,
            "--benchmark-data",
            str(shared_data),
            check=True,
        )
        counts = json.loads((out / "manifest.json").read_text())["counts"]
        audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
        leak = [e for e in audit if e["document"].endswith("leak.py")]
        assert len(leak) == 1 and problem["task_id"] in leak[0]["reason"]
        if expect_removed:
            assert counts["filtered"] == {"decontamination": 1} and leak[0]["removed"] == "filtered"
        else:
            assert counts["flagged"] == {"decontamination": 1} and leak[0]["removed"] is None
            assert counts["documents_out"] == counts["documents_in"]


def test_outputs_do_not_depend_on_batch_size_or_file_splitting(tmp_path, codegen_tokenizer, monkeypatch):
    """Documents flow through the map stage in batches and big files are split into shards; neither
    a different batch size (7 instead of 512: one shard spans many batches) nor splitting the file
    may change a byte of the outputs."""
    from phi_hpc.fileio import sha256_file

    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(0)
    vocabulary = [f"name{i}" for i in range(300)]
    records = []
    for i in range(60):
        words = rng.choice(vocabulary, size=200).tolist()
        records.append(" ".join(words))
        if i % 10 == 0:  # a near duplicate 25 documents later, in a different batch
            records.append(None)
    texts = []
    for i, text in enumerate(records):
        texts.append(text if text is not None else texts[i - 1] + " plus one edit")
    (root / "big.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:40] + texts[40:][::-1]))

    def run(name, **overrides):
        config = PrepareConfig(
            inputs=[str(root / "big.jsonl")],
            tokenizer=str(codegen_tokenizer),
            output_dir=str(tmp_path / name),
            **{"workers": 1, **overrides},
        )
        manifest = pipeline.prepare(config, show_progress=False)
        files = ["train.bin", "train.idx", "validation.bin", "validation.idx", "audit.jsonl", "bad_inputs.jsonl"]
        return manifest, {f: sha256_file(tmp_path / name / f) for f in files}

    default_manifest, default_files = run("default")
    assert default_manifest["counts"]["near_duplicates"] == 6 and default_manifest["shards"] == 1
    # The file split into ~9 byte-range shards, processed by two workers: same bytes out.
    split_manifest, split_files = run("split", shard_mb=0.01, workers=2)
    assert split_manifest["shards"] > 5 and split_files == default_files
    monkeypatch.setattr(map_stage, "_BATCH_DOCUMENTS", 7)
    _, small_files = run("small")
    assert small_files == default_files


def test_a_changed_config_never_reuses_stale_work(tmp_path, codegen_tokenizer):
    root = _corpus(tmp_path)
    out = tmp_path / "out"

    def run(seed):
        config = PrepareConfig(
            inputs=[str(root)],
            tokenizer=str(codegen_tokenizer),
            output_dir=str(out),
            workers=1,
            keep_work=True,
            split=SplitConfig(validation_fraction=0.2, seed=seed),
        )
        return pipeline.prepare(config, show_progress=False)

    first = run(1)
    second = run(2)
    assert first["fingerprint"] != second["fingerprint"]
    assert first["outputs"][0]["sha256"] != second["outputs"][0]["sha256"], "a different split was written"
    assert [p.name for p in (out / ".work").iterdir()] == [second["fingerprint"][:16]], "stale work removed"
    assert run(2) == second and json.loads((out / "summary.json").read_text())["status"] == "already complete"
