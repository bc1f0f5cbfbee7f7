"""Several nodes for real: the tiny pretrain on both nodes of the local cluster (one task each, gloo).

Four runs at once (the cluster has room for exactly these): the reference on one node with two tasks,
and three on two nodes with one task each: left alone, requeued by an operator at step 7 (watched by
``logs --follow --rank all``), and stopped by its time-limit signal. All four must give the same losses:
the two-node runs are the same computation split across nodes, and a resumed run continues exactly.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.launch.conftest import attempts, debug_logs, status, step_losses, tiny_pretrain_args
from tests.launch.interrupts import Follower, Interrupter

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.deepspeed]

STEPS = 20
TWO_NODES = ("--nodes", "2", "--tasks-per-node", "1", "--gpus-per-node", "1")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def sacct_nodes(job: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", job, "-o", "NodeList"], capture_output=True, text=True, timeout=60
    ).stdout.split()
    return out[-1] if out else ""


@pytest.fixture(scope="module")
def runs(slurm_cluster, tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    reference, plain, requeued, limited = (root / name for name in ("reference", "plain", "requeued", "limited"))
    from tests.launch.conftest import phi

    phi(*tiny_pretrain_args(reference, tiny_data))
    phi(*tiny_pretrain_args(plain, tiny_data, *TWO_NODES))
    phi(*tiny_pretrain_args(requeued, tiny_data, *TWO_NODES))
    phi(*tiny_pretrain_args(limited, tiny_data, *TWO_NODES, "--time", "2", "--signal-delay", "60"))
    follower = Follower(requeued, "--rank", "all")
    # The time-limit signal comes from a 30 s housekeeping loop, 30-60 s after the start: the interrupter
    # freezes the tasks of both nodes until it is surely out, so that it lands mid-run.
    interrupter = Interrupter(requeued, limited)
    rows: dict = {}
    deadline = time.monotonic() + 600
    with follower, interrupter:
        while time.monotonic() < deadline:
            interrupter.poll()
            rows = {run.name: status(run)["train"] for run in (reference, plain, requeued, limited)}
            if all(row["state"].split()[0] in FINISHED for row in rows.values()):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"runs did not finish: {rows}\n{debug_logs(requeued)}\n{debug_logs(limited)}")
        follow_code = follower.finish()
    requeue_sent, frozen, limit_lifted = interrupter.requeue_sent, interrupter.frozen, interrupter.limit_lifted
    assert requeue_sent and len(frozen) >= 2 and limit_lifted, (requeue_sent, frozen, limit_lifted)
    return {"root": root, "rows": rows, "follower": follower, "follow_code": follow_code}


def test_the_cluster_has_two_nodes_with_their_own_names_and_addresses(slurm_cluster):
    nodes = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split("\n")
    assert sorted(line.split()[0] for line in nodes if line.strip()) == ["node1", "node2"], nodes
    for number, name in enumerate(("node1", "node2"), start=2):
        shown = subprocess.run(
            ["scontrol", "show", "node", name], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert f"NodeAddr=127.0.0.{number} " in shown and "Gres=gpu:" in shown, shown
        assert socket.gethostbyname(name) == f"127.0.0.{number}"  # what MASTER_ADDR=node1 connects to


def assert_same_losses(run_dir: Path, reference: Path) -> None:
    expected, got = step_losses(reference), step_losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(1, STEPS + 1)), debug_logs(run_dir)
    assert [got[s] for s in sorted(got)] == pytest.approx([expected[s] for s in sorted(expected)], abs=1e-5)


def rank_log(run_dir: Path, row: dict, attempt: int, rank: int) -> str:
    return (run_dir / "logs" / "train" / row["job_id"] / f"attempt-{attempt}" / f"rank{rank}.out").read_text()


def test_two_nodes_one_task_each_equal_one_node_two_tasks(runs):
    root, rows = runs["root"], runs["rows"]
    assert rows["reference"]["state"] == "COMPLETED", debug_logs(root / "reference")
    assert rows["plain"]["state"] == "COMPLETED", debug_logs(root / "plain")
    assert sacct_nodes(rows["plain"]["job_id"]) == "node[1-2]"
    assert sacct_nodes(rows["reference"]["job_id"]) in ("node1", "node2")
    # each task really ran on its own node, and both met at the first node's address
    first, second = (rank_log(root / "plain", rows["plain"], 0, rank) for rank in (0, 1))
    assert "rank 0/2 on node1 (node 0), master node1:" in first
    assert "rank 1/2 on node2 (node 1), master node1:" in second
    assert_same_losses(root / "plain", root / "reference")


@pytest.mark.parametrize("name", ["requeued", "limited"])
def test_two_node_run_resumes_exactly_after_requeue_and_time_limit(runs, name):
    root, row = runs["root"], runs["rows"][name]
    assert row["state"] == "COMPLETED" and row["requeues"] >= 1, debug_logs(root / name)
    first_end = next(e for e in attempts(root / name) if e["event"] == "end")
    assert first_end["status"] == "requeued" and first_end["exit_code"] == 75, attempts(root / name)
    for rank in (0, 1):
        assert f"rank {rank}/2 on node{rank + 1}" in rank_log(root / name, row, 1, rank)
    assert "resumed from" in rank_log(root / name, row, 1, 0)
    assert_same_losses(root / name, root / "reference")


def test_logs_follow_all_ranks_shows_both_nodes_across_the_requeue(runs):
    assert runs["follow_code"] == 0
    text = [line for _, line in runs["follower"].lines]
    job = runs["rows"]["requeued"]["job_id"]
    header = f"==> logs/train/{job}/attempt-1/rank*.out <=="
    assert header in text, "\n".join(text[-40:])
    after = text[text.index(header) + 1 :]
    assert any(line.startswith("[rank0] ") and "on node1" in line for line in after), after[:20]
    assert any(line.startswith("[rank1] ") and "on node2" in line for line in after), after[:20]
    assert any(line.startswith("[rank0] ") and f"step {STEPS}/{STEPS}" in line for line in after), after[-10:]


def test_eval_run_on_both_nodes_merges_like_one_process(runs, codegen_tokenizer, tmp_path):
    """`submit eval --nodes 2`: each node's task decodes its share, rank 0 merges and scores; the files
    equal those of one `eval run` process on the same checkpoint."""
    from tests.launch.conftest import phi, wait_for

    checkpoint = runs["root"] / "reference" / "checkpoints" / "latest"
    options = [
        "--task",
        "humaneval",
        "--limit",
        "4",
        "--max-new-tokens",
        "8",
        "--tokenizer",
        str(codegen_tokenizer),
        "--workers",
        "1",
    ]
    split, single, run_dir = tmp_path / "split", tmp_path / "single", tmp_path / "run"
    phi(
        "submit",
        "eval",
        "--checkpoint",
        str(checkpoint),
        "-o",
        str(split),
        "--run-dir",
        str(run_dir),
        "--profile",
        "local",
        *TWO_NODES[:4],
        "--gpus-per-node",
        "0",
        "--",
        *options,
    )
    row = wait_for(run_dir, ["eval-latest"], timeout=400)["eval-latest"]
    assert row["state"] == "COMPLETED", debug_logs(run_dir)
    assert sacct_nodes(row["job_id"]) == "node[1-2]"
    logs = run_dir / "logs" / "eval-latest" / row["job_id"] / "attempt-0"
    assert "rank 1/2 on node2" in (logs / "rank1.out").read_text()
    phi("eval", "run", "--checkpoint", str(checkpoint), "-o", str(single), *options, timeout=600)
    two, one = (json.loads((folder / "results.json").read_text()) for folder in (split, single))
    assert (two["world_size"], one["world_size"]) == (2, 1)
    assert two["tasks"]["humaneval"]["pass@1"] == one["tasks"]["humaneval"]["pass@1"]
    assert two["tasks"]["humaneval"]["status_counts"] == one["tasks"]["humaneval"]["status_counts"]
    for name in ("samples.jsonl", "results.jsonl"):
        got, expected = (
            [json.loads(line) for line in (folder / "humaneval" / name).read_text().splitlines()]
            for folder in (split, single)
        )
        assert len(got) == len(expected) == 4
        assert [(r["task_id"], r["completion"], r.get("passed")) for r in got] == [
            (r["task_id"], r["completion"], r.get("passed")) for r in expected
        ]
