"""``eval grade``: an LLM grades each completion, as phi-1's paper does in section 3.

Unit tests say pass or fail; the paper also asked GPT-4 to grade solutions to 50 new problems on a
0-10 scale, which credits a nearly right program and penalises one that games the tests. Each sample
(a line of SAMPLES.jsonl: task_id, completion) is sent with its problem under a rubric (editable:
``--rubric FILE``, ``--print-rubric`` shows the default). The answer must contain ``Grade: N``; the
grade and the model's whole answer (its reasoning) are appended to GRADES.jsonl.

Resumable like ``quality label``: every finished grade is one fsynced line keyed by the sample's
position and content, so a killed run, rerun, grades exactly the samples it had not graded.
"""

from __future__ import annotations

import hashlib
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from phi_hpc.quality.appendlog import AppendLog
from phi_hpc.quality.openai_client import ChatClient, EndpointConfig, EndpointError, answers, read_prompt_template

DEFAULT_RUBRIC = """\
You are grading a student's solution to a programming problem.

The problem:
```python
{problem}
```

The student's complete program:
```python
{solution}
```

Grade the solution from 0 to 10 as a teacher would: 10 is a correct, clear and efficient solution;
5 is a solution with the right idea but real mistakes; 0 is unrelated, empty or nonsensical code.
Judge correctness by reasoning about the code, not by whether it looks like the expected answer.

Explain your reasoning in a few sentences, then end with a last line "Grade: N" (N an integer 0-10).
"""

GRADE_RE = re.compile(r"grade\s*[:=]\s*(\d+(?:\.\d+)?)", re.I)


@dataclass(frozen=True)
class GradeItem:
    id: str
    index: int
    task_id: str
    prompt: str


def load_rubric(path: str | None) -> str:
    return read_prompt_template(path, DEFAULT_RUBRIC, "--rubric", ("{problem}", "{solution}"), "--print-rubric")


def parse_grade(answer: str) -> float | None:
    """The last ``Grade: N`` of the answer (models sometimes quote the rubric first), if in 0..10."""
    matches = GRADE_RE.findall(answer)
    if not matches:
        return None
    grade = float(matches[-1])
    return grade if 0 <= grade <= 10 else None


def grade_items(samples: list[dict], problems: dict, rubric: str) -> list[GradeItem]:
    """One item per sample; the id is stable across runs (position + content), so reruns resume."""
    items = []
    for index, sample in enumerate(samples):
        problem = problems[sample["task_id"]]
        solution = problem.solution_prefix + sample["completion"]
        digest = hashlib.sha256(f"{sample['task_id']}\0{sample['completion']}".encode()).hexdigest()[:16]
        items.append(
            GradeItem(
                id=f"{index:07d}-{digest}",
                index=index,
                task_id=sample["task_id"],
                prompt=rubric.replace("{problem}", problem.prompt).replace("{solution}", solution),
            )
        )
    return items


def grade_samples(
    items: list[GradeItem], output: str | Path, endpoint: EndpointConfig, concurrency: int, progress=None
) -> dict:
    """Grade every item not yet in ``output``; returns the run summary (mean grade over all of them)."""
    client = ChatClient(endpoint)
    started = time.time()
    failed, errors = 0, []
    with AppendLog(output) as log:
        already = log.ids
        todo = [item for item in items if item.id not in already]

        def ask(item: GradeItem) -> str:
            return client.chat([{"role": "user", "content": item.prompt}])

        for item, answer in answers(ask, todo, concurrency, progress, "grading"):
            if isinstance(answer, EndpointError):
                failed += 1
                errors.append(answer.message)
                continue
            log.append(
                {
                    "id": item.id,
                    "index": item.index,
                    "task_id": item.task_id,
                    "grade": parse_grade(answer),
                    "reasoning": answer,
                    "model": endpoint.model,
                }
            )
        wanted = {item.id for item in items}
        grades = [r["grade"] for r in log.records if r["id"] in wanted and r["grade"] is not None]
        graded = sum(1 for r in log.records if r["id"] in wanted)
    return {
        "output": str(output),
        "samples": len(items),
        "already_done": len(already & wanted),
        "graded": graded,
        "unparsed": graded - len(grades),
        "failed": failed,
        "errors": errors[:5],
        "mean_grade": round(statistics.fmean(grades), 4) if grades else None,
        "requests": client.requests,
        "retries": dict(client.retries),
        "seconds": round(time.time() - started, 3),
        "model": endpoint.model,
    }


def _default_results(samples_path: Path) -> Path | None:
    """Where `eval run` / `eval score` put the results of these samples, if they are there."""
    stem = samples_path.name.removesuffix(".jsonl")
    for candidate in (
        samples_path.with_name("results.jsonl") if samples_path.name == "samples.jsonl" else None,
        samples_path.with_name(f"{stem}_results.jsonl"),
    ):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _pass_at_1(results_path: Path, task: str, problems: list) -> float | None:
    from phi_hpc.eval.score import summarize
    from phi_hpc.fileio import read_jsonl

    rows = read_jsonl(results_path, "pass the results.jsonl written by `eval score` or `eval run`")
    return summarize(rows, task, problems, (1,))["pass_at_k"].get("pass@1")


def grade_run(
    samples_path: Path,
    task: str,
    data_path,
    output_path,
    results_path,
    rubric_path,
    endpoint: EndpointConfig,
    concurrency: int,
) -> dict:
    """``phi-hpc eval grade``: grades, a summary beside them, pass@1 from the score results if present."""
    from phi_hpc.eval.samples import read_samples, summary_path_for
    from phi_hpc.eval.score import match_samples
    from phi_hpc.eval.tasks import load_task
    from phi_hpc.fileio import write_json
    from phi_hpc.progress import progress_bar

    rubric = load_rubric(rubric_path)
    problems = load_task(task, data_path)
    samples = read_samples(samples_path)
    matched = match_samples(samples, task, problems, str(samples_path))
    items = grade_items([sample for sample, _ in matched], {s["task_id"]: p for s, p in matched}, rubric)
    output = (
        Path(output_path)
        if output_path
        else samples_path.with_name(samples_path.name.removesuffix(".jsonl") + "_grades.jsonl")
    )
    with progress_bar() as progress:
        summary = grade_samples(items, output, endpoint, concurrency, progress)
    results = Path(results_path) if results_path else _default_results(samples_path)
    summary.update(
        task=task,
        samples_file=str(samples_path),
        results_file=str(results) if results else None,
        **{"pass@1": _pass_at_1(results, task, problems) if results else None},
    )
    summary["summary_file"] = str(summary_path_for(output))
    write_json(summary["summary_file"], summary)
    return summary
