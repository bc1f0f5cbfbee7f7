"""One installation case of issue 10's acceptance 3, run under the interpreter and user being tested.

``python tests/eval/install_case.py DATA_DIR PROJECT_DIR`` (PYTHONPATH = the checkout) runs the hostile
suite and every HumanEval and MBPP reference in the default (bubblewrap) sandbox and prints one JSON
line: who ran it, with which interpreter, what the attacks achieved (``problems``, empty when all were
contained) and how many references passed. Plain Python on purpose: the interpreter under test may be
a bare venv of the system Python, with nothing installed but what the sandbox needs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from phi_hpc.eval.sandbox import Program, Sandbox, SandboxLimits
from phi_hpc.eval.tasks import load_task
from tests.eval.false_passes import (
    clean_world_check,
    plant_key,
    reach_attempts,
    read_key,
    unlink_key,
    wrong_answer_attempts,
)
from tests.eval.hostile_programs import ADD, containment_problems, hostile_programs, make_secrets, remove_secrets


def main(data_dir: Path, project_dir: Path) -> dict:
    report = {"uid": os.getuid(), "executable": sys.executable, "prefix": sys.prefix}
    secrets = make_secrets(project_dir)
    try:
        programs = hostile_programs(secrets)
        names = list(programs)
        after = Program(solution=ADD, tests="assert add(2, 3) == 5\n")
        limits = SandboxLimits(timeout_s=6.0, address_space_bytes=1 << 30)
        with Sandbox(workers=2, limits=limits) as sandbox:
            report["isolation"] = sandbox.isolation
            results = sandbox.run_all([programs[n] for n in names] + [after, after])
        report["problems"] = containment_problems(names, results[:-2], secrets, limits.output_bytes)
        report["after"] = [r.status for r in results[-2:]]
    finally:
        remove_secrets(secrets)
    report["false_passes"] = false_pass_attempts(data_dir)
    for task, path in (
        ("humaneval", data_dir / "humaneval" / "HumanEval.jsonl.gz"),
        ("mbpp-full", data_dir / "mbpp" / "mbpp.jsonl"),
    ):
        problems = load_task(task, path)  # the sandbox directly: the scorer's progress bar needs rich
        with Sandbox(workers=2) as sandbox:
            rows = sandbox.run_all([p.program(p.reference) for p in problems])
        report[task] = {
            "passed": sum(r.passed for r in rows),
            "total": len(rows),
            "failures": [(p.task_id, r.status, r.error) for p, r in zip(problems, rows) if not r.passed][:5],
        }
    return report


def false_pass_attempts(data_dir: Path) -> dict:
    """Issue 17: every attempt, each followed on one worker by a clean-world check and a right answer;
    a key planted in our own session keyring must come out unchanged."""
    problems = {
        p.task_id: p
        for task, path in (
            ("humaneval", data_dir / "humaneval" / "HumanEval.jsonl.gz"),
            ("mbpp-full", data_dir / "mbpp" / "mbpp.jsonl"),
        )
        for p in load_task(task, path)
    }
    key, payload = plant_key()
    try:
        attempts = {**wrong_answer_attempts(problems), **reach_attempts(key)}
        right = problems["HumanEval/0"].program(problems["HumanEval/0"].reference)
        programs = [p for attempt in attempts.values() for p in (attempt, clean_world_check(), right)]
        with Sandbox(workers=1, limits=SandboxLimits(timeout_s=10.0, address_space_bytes=2 << 30)) as sandbox:
            results = sandbox.run_all(programs)
        return {
            "count": len(attempts),
            "passed": [n for i, n in enumerate(attempts) if results[3 * i].passed],
            "not_followed_by_passes": [
                n for i, n in enumerate(attempts) if not (results[3 * i + 1].passed and results[3 * i + 2].passed)
            ],
            "key_intact": read_key(key) == payload,
        }
    finally:
        unlink_key(key)


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))), flush=True)
