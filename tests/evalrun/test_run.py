"""`eval run`: model folder in, samples + sandboxed pass@k out (acceptance 2 of issue 6)."""

from __future__ import annotations

import json
import shutil

import pytest

from phi_hpc.errors import PhiError
from phi_hpc.eval.config import EvalRunConfig
from phi_hpc.eval.model_source import resolve_checkpoint, resolve_tokenizer
from phi_hpc.eval.run import Rank, detect_rank, run_eval


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory, codegen_tokenizer):
    """A random phi saved by transformers itself (not by us), with phi-1's tokenizer beside it."""
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    config = PhiConfig(
        vocab_size=51200,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        partial_rotary_factor=0.5,
        max_position_embeddings=2048,
        eos_token_id=50256,
        bos_token_id=50256,
    )
    model = PhiForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("tiny-phi")
    model.save_pretrained(folder)
    shutil.copy(codegen_tokenizer, folder / "tokenizer.json")
    return folder


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _problems(task, path, limit):
    from phi_hpc.eval.tasks import load_task

    return load_task(task, str(path))[:limit]


def test_eval_run_hf_model_end_to_end(run_cli, tiny_hf_model, humaneval_path, mbpp_path, tmp_path):
    out = tmp_path / "eval"
    proc = run_cli(
        "eval",
        "run",
        "--hf-model",
        str(tiny_hf_model),
        "--task",
        "humaneval,mbpp",
        "--data",
        f"humaneval={humaneval_path}",
        "--data",
        f"mbpp={mbpp_path}",
        "--limit",
        "3",
        "--max-new-tokens",
        "24",
        "--batch-size",
        "2",
        "-o",
        str(out),
        check=True,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["source"] == "hf-model" and results["generation"]["greedy"] is True
    assert set(results["tasks"]) == {"humaneval", "mbpp"}
    for task, path in (("humaneval", humaneval_path), ("mbpp", mbpp_path)):
        summary = results["tasks"][task]
        samples = _jsonl(out / task / "samples.jsonl")
        scored = _jsonl(out / task / "results.jsonl")
        expected_ids = [p.task_id for p in _problems(task, path, 3)]
        assert [s["task_id"] for s in samples] == expected_ids
        assert [r["task_id"] for r in scored] == expected_ids
        assert all(isinstance(s["completion"], str) for s in samples)
        assert summary["problems"] == 3 and summary["samples"] == 3
        assert summary["pass@1"] == pytest.approx(sum(r["passed"] for r in scored) / 3)
        assert sum(summary["status_counts"].values()) == 3
    assert "pass@1" in proc.stdout and "humaneval" in proc.stdout


def test_completions_are_what_transformers_generates(tiny_hf_model, humaneval_path, tmp_path):
    """The loaded model decodes exactly like the transformers model that saved it (greedy)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import PhiForCausalLM

    from phi_hpc.model.generate import truncate_at_stop

    config = EvalRunConfig(
        output_dir=str(tmp_path / "o"),
        hf_model=str(tiny_hf_model),
        tasks=("humaneval",),
        data={"humaneval": str(humaneval_path)},
        limit=2,
        max_new_tokens=20,
        batch_size=2,
    )
    outcome = run_eval(config, show_progress=False)
    samples = _jsonl(tmp_path / "o" / "humaneval" / "samples.jsonl")
    reference = PhiForCausalLM.from_pretrained(tiny_hf_model).eval()
    tokenizer = Tokenizer.from_file(str(tiny_hf_model / "tokenizer.json"))
    for problem, sample in zip(_problems("humaneval", humaneval_path, 2), samples):
        ids = torch.tensor([tokenizer.encode(problem.prompt).ids])
        with torch.no_grad():
            out = reference.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=50256, pad_token_id=50256)
        new = [t for t in out[0, ids.shape[1] :].tolist() if t != 50256]
        text = truncate_at_stop(tokenizer.decode(new, skip_special_tokens=False), list(problem.stop_sequences))
        assert sample["completion"] == text
    assert outcome.results["tasks"]["humaneval"]["samples"] == 2


class _ReferenceCompleter:
    """Answers every prompt with the task's own reference solution (or with a wrong body)."""

    def __init__(self, problems, wrong: bool = False):
        self.by_prompt = {p.prompt: p for p in problems}
        self.wrong = wrong
        self.calls = 0

    def complete(self, prompts, stop_sequences, progress=None, keys=None):
        self.calls += 1
        outs = []
        for prompt in prompts:
            text = "    return None\n" if self.wrong else self.by_prompt[prompt].reference
            outs.append([text])
        if progress:
            progress(len(prompts))
        return outs


def _config(tmp_path, humaneval_path, **changes):
    fields = dict(
        output_dir=str(tmp_path / "out"),
        hf_model=None,
        tasks=("humaneval",),
        data={"humaneval": str(humaneval_path)},
        limit=5,
        max_new_tokens=16,
    )
    fields.update(changes)
    return EvalRunConfig(**fields)


def test_reference_solutions_score_all_and_wrong_ones_none(tiny_hf_model, humaneval_path, tmp_path):
    problems = _problems("humaneval", humaneval_path, 5)
    good = run_eval(
        _config(tmp_path / "good", humaneval_path, hf_model=str(tiny_hf_model)),
        completer=_ReferenceCompleter(problems),
        show_progress=False,
    ).results
    assert good["tasks"]["humaneval"]["pass@1"] == 1.0
    assert (
        good["tasks"]["humaneval"]["status_counts"]["passed"] == 5
        and sum(good["tasks"]["humaneval"]["status_counts"].values()) == 5
    )
    bad = run_eval(
        _config(tmp_path / "bad", humaneval_path, hf_model=str(tiny_hf_model)),
        completer=_ReferenceCompleter(problems, wrong=True),
        show_progress=False,
    ).results
    assert bad["tasks"]["humaneval"]["pass@1"] == 0.0
    assert bad["tasks"]["humaneval"]["status_counts"].get("passed", 0) == 0


def test_ranks_split_the_problems_and_rank0_merges_in_order(tiny_hf_model, humaneval_path, tmp_path):
    """Two ranks (run one after the other here) give the same files as one process."""
    single = _config(tmp_path / "single", humaneval_path, hf_model=str(tiny_hf_model), limit=5)
    run_eval(single, rank=Rank(0, 1), show_progress=False)
    split = _config(tmp_path / "split", humaneval_path, hf_model=str(tiny_hf_model), limit=5)
    assert run_eval(split, rank=Rank(1, 2), show_progress=False).results is None  # rank 1: shard only
    shard = _jsonl(tmp_path / "split" / "out" / ".shards" / "rank-00001-of-00002.jsonl")
    assert [r["index"] for r in shard[1:]] == [1, 3]  # strided share of problems 0..4
    merged = run_eval(split, rank=Rank(0, 2), show_progress=False).results
    assert merged["world_size"] == 2
    for name in ("samples.jsonl", "results.jsonl"):
        one = _jsonl(tmp_path / "single" / "out" / "humaneval" / name)
        two = _jsonl(tmp_path / "split" / "out" / "humaneval" / name)
        assert [(r["task_id"], r["completion"]) for r in one] == [(r["task_id"], r["completion"]) for r in two]


def test_finished_shards_are_reused_and_stale_ones_are_not(tiny_hf_model, humaneval_path, tmp_path):
    problems = _problems("humaneval", humaneval_path, 5)
    config = _config(tmp_path, humaneval_path, hf_model=str(tiny_hf_model))
    run_eval(config, completer=_ReferenceCompleter(problems), show_progress=False)
    again = _ReferenceCompleter(problems)
    assert run_eval(config, completer=again, show_progress=False).results["reused_own_shard"] is True
    assert again.calls == 0
    changed = _config(tmp_path, humaneval_path, hf_model=str(tiny_hf_model), max_new_tokens=17)
    fresh = _ReferenceCompleter(problems)
    assert run_eval(changed, completer=fresh, show_progress=False).results["reused_own_shard"] is False
    assert fresh.calls == 1


def _fake_run(tmp_path, tiny_hf_model, tokenizer_path, layout_hf_subdir: bool):
    """RUN/checkpoints/<step>[/hf] + latest + a config naming a prepared data folder."""
    run = tmp_path / "run"
    step_dir = run / "checkpoints" / "40"
    model_dir = step_dir / "hf" if layout_hf_subdir else step_dir
    shutil.copytree(tiny_hf_model, model_dir, ignore=shutil.ignore_patterns("tokenizer.json"))
    (run / "checkpoints" / "latest").write_text("40\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"tokenizer": {"path": str(tokenizer_path)}}))
    (run / "config.yaml").write_text(f"data:\n  paths:\n  - {data}\nseed: 1\n")
    return run, model_dir


@pytest.mark.parametrize("hf_subdir", [False, True])
def test_checkpoint_paths_resolve_to_the_step(tmp_path, tiny_hf_model, codegen_tokenizer, hf_subdir):
    run, model_dir = _fake_run(tmp_path, tiny_hf_model, codegen_tokenizer, hf_subdir)
    for given in (run, run / "checkpoints", run / "checkpoints" / "latest", run / "checkpoints" / "40", model_dir):
        resolved = resolve_checkpoint(given)
        assert resolved.model_dir == model_dir and resolved.step == 40 and resolved.run_dir == run, given
    # no tokenizer.json in the checkpoint: found through the run's data manifest
    assert resolve_tokenizer(None, resolve_checkpoint(run)) == codegen_tokenizer
    # the copy `submit --eval-every` keeps for its eval jobs: RUN/eval/checkpoints/<step>
    kept = run / "eval" / "checkpoints" / "40"
    shutil.copytree(model_dir, kept)
    resolved = resolve_checkpoint(kept)
    assert (resolved.model_dir, resolved.step, resolved.run_dir) == (kept, 40, run)


def test_eval_run_checkpoint_records_step(run_cli, tmp_path, tiny_hf_model, codegen_tokenizer, humaneval_path):
    run, _ = _fake_run(tmp_path, tiny_hf_model, codegen_tokenizer, layout_hf_subdir=True)
    out = run / "eval" / "step-40"
    run_cli(
        "eval",
        "run",
        "--checkpoint",
        str(run / "checkpoints" / "latest"),
        "--data",
        str(humaneval_path),
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "-o",
        str(out),
        check=True,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["step"] == 40 and results["model"]["tokenizer"] == str(codegen_tokenizer)
    proc = run_cli("eval", "curve", str(run), check=True)
    assert (run / "eval" / "curve.png").is_file() and "40" in proc.stdout


def test_missing_tokenizer_is_a_one_line_error_with_a_hint(run_cli, tmp_path, tiny_hf_model):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_hf_model, bare, ignore=shutil.ignore_patterns("tokenizer.json"))
    proc = run_cli("eval", "run", "--hf-model", str(bare), "--limit", "1", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "--tokenizer" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hf-model", "A", "--checkpoint", "B"], "exactly one of"),
        (["--hf-model", "A", "--greedy", "--n", "4"], "identical samples"),
        (["--hf-model", "A", "--task", "humaneval,apps"], "unknown task apps"),
        (["--hf-model", "A", "--task", "humaneval,mbpp", "--data", "x.jsonl"], "say which one"),
    ],
)
def test_bad_options_exit_2_in_one_line(run_cli, tmp_path, args, message):
    proc = run_cli("eval", "run", *args, "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_rank_detection_from_torchrun_and_srun():
    assert detect_rank({}) == Rank(0, 1, 0)
    assert detect_rank({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Rank(3, 4, 1)
    srun_task = {
        "SLURM_PROCID": "1",
        "SLURM_NTASKS": "2",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_ID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_JOB_ID": "7",
    }
    assert detect_rank(srun_task) == Rank(1, 2, 1)
    # the batch script of a 2-task job is one process, not rank 0 of 2 (it would wait for rank 1 forever)
    assert detect_rank({**srun_task, "SLURM_PROCID": "0", "SLURM_STEP_ID": "batch"}) == Rank(0, 1, 0)
    with pytest.raises(PhiError):
        detect_rank({"RANK": "4", "WORLD_SIZE": "4"})


def test_sampling_n_per_problem_is_seeded_and_reports_pass_at_k(tiny_hf_model, humaneval_path, tmp_path):
    def sampled(folder, seed):
        config = _config(
            tmp_path / folder,
            humaneval_path,
            hf_model=str(tiny_hf_model),
            limit=2,
            n=3,
            greedy=False,
            temperature=0.8,
            max_new_tokens=8,
            ks=(1, 2, 10),
            seed=seed,
        )
        results = run_eval(config, show_progress=False).results
        return results, _jsonl(tmp_path / folder / "out" / "humaneval" / "samples.jsonl")

    results, samples = sampled("a", seed=7)
    assert [s["task_id"] for s in samples] == ["HumanEval/0"] * 3 + ["HumanEval/1"] * 3
    assert len({s["completion"] for s in samples[:3]}) > 1  # really sampled, not greedy copies
    summary = results["tasks"]["humaneval"]
    assert summary["samples"] == 6 and set(summary) >= {"pass@1", "pass@2"} and summary["skipped_k"] == [10]
    assert results["generation"]["temperature"] == 0.8 and results["generation"]["greedy"] is False
    assert sampled("b", seed=7)[1] == samples  # same seed, same samples
    assert sampled("c", seed=8)[1] != samples


def test_sampled_completions_do_not_depend_on_the_number_of_ranks(tiny_hf_model, humaneval_path, tmp_path):
    def config(folder):
        return _config(
            tmp_path / folder,
            humaneval_path,
            hf_model=str(tiny_hf_model),
            limit=4,
            n=2,
            greedy=False,
            temperature=0.8,
            max_new_tokens=8,
            ks=(1, 2),
            seed=3,
        )

    run_eval(config("single"), rank=Rank(0, 1), show_progress=False)
    run_eval(config("split"), rank=Rank(1, 2), show_progress=False)
    run_eval(config("split"), rank=Rank(0, 2), show_progress=False)
    one = _jsonl(tmp_path / "single" / "out" / "humaneval" / "samples.jsonl")
    two = _jsonl(tmp_path / "split" / "out" / "humaneval" / "samples.jsonl")
    assert len({s["completion"] for s in one}) > 1  # really sampled
    assert [(s["task_id"], s["completion"]) for s in one] == [(s["task_id"], s["completion"]) for s in two]


def test_prompts_running_past_the_models_positions_are_warned_about(codegen_tokenizer, tmp_path):
    from types import SimpleNamespace

    from tokenizers import Tokenizer

    from phi_hpc.eval.completers import ModelCompleter

    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=20))
    tokenizer = Tokenizer.from_file(str(codegen_tokenizer))
    prompt = "def add(a, b):\n    return a + b\n"  # 14 tokens
    n_tokens = len(tokenizer.encode(prompt).ids)

    def warning(max_new_tokens):
        config = EvalRunConfig(output_dir=str(tmp_path), hf_model="x", max_new_tokens=max_new_tokens)
        return ModelCompleter(model, tokenizer, config).context_warning([prompt, "x = 1\n"])

    assert warning(20 - n_tokens) is None
    assert f"longest prompt ({n_tokens} tokens)" in warning(20 - n_tokens + 1)


def test_a_rank_without_problems_writes_an_empty_shard_without_loading(tmp_path, codegen_tokenizer, humaneval_path):
    unloadable = tmp_path / "model"
    unloadable.mkdir()
    (unloadable / "config.json").write_text("{}")  # loading this would fail
    shutil.copy(codegen_tokenizer, unloadable / "tokenizer.json")
    config = _config(tmp_path, humaneval_path, hf_model=str(unloadable), limit=2)
    assert run_eval(config, rank=Rank(3, 4), show_progress=False).results is None
    shard = _jsonl(tmp_path / "out" / ".shards" / "rank-00003-of-00004.jsonl")
    assert shard[0]["records"] == 0 and len(shard) == 1


def test_eval_run_on_a_problem_file_of_ones_own(run_cli, tiny_hf_model, tmp_path):
    """``--task FILE.jsonl`` through the whole run: generated, scored in the sandbox, reported by file stem."""
    problems = tmp_path / "my-problems.jsonl"
    problems.write_text(
        "".join(
            json.dumps(p) + "\n"
            for p in [
                {"task_id": "mine/0", "prompt": "def one():\n", "tests": "assert one() == 1\n", "stop": ["\ndef"]},
                {"task_id": "mine/1", "prompt": "def two():\n", "tests": "assert two() == 2\n"},
            ]
        )
    )
    out = tmp_path / "eval"
    run_cli(
        "eval",
        "run",
        "--hf-model",
        str(tiny_hf_model),
        "--task",
        str(problems),
        "--max-new-tokens",
        "8",
        "-o",
        str(out),
        check=True,
    )
    results = json.loads((out / "results.json").read_text())
    summary = results["tasks"]["my-problems"]
    assert summary["problems"] == 2 and summary["samples_file"] == "my-problems/samples.jsonl"
    assert [s["task_id"] for s in _jsonl(out / "my-problems" / "samples.jsonl")] == ["mine/0", "mine/1"]
    assert sum(summary["status_counts"].values()) == 2  # both ran in the sandbox (a random model fails them)
