"""``synth textbook|exercises``: the run loop that turns an LLM's answers into synthetic training data.

Each item's prompt comes from the prompt space of :mod:`phi_hpc.quality.synth_prompts` (topic, audience,
style and constraint drawn with ``(seed, index, attempt)``: diverse by construction, the same question
in every run); its answer is taken apart and tested by :mod:`phi_hpc.quality.synth_answers`. What is
kept, what is asked again and what is written is decided here.

Items have stable ids (``textbook-s0-000017``); the output is append-only and resumable (see
:mod:`phi_hpc.quality.appendlog`). Outputs are de-duplicated on their normalized text: a repeat
(or, for exercises, code that does not parse or fails its own tests) is asked again with the next
attempt's draw, up to ``--max-attempts``.

Exercises are stored in phi-1's CodeExercises form: every record also has ``text`` (prompt +
completion), so ``prepare`` reads the file as it is and the finetune loader reads
``prompt``/``completion``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from phi_hpc.quality.appendlog import AppendLog
from phi_hpc.quality.openai_client import BudgetExhausted, ChatClient, EndpointConfig, Unanswered, answers
from phi_hpc.quality.synth_answers import Exercise, ExerciseChecker, extract_code, normalized_digest, split_exercise
from phi_hpc.quality.synth_prompts import PromptSeeds, default_template, draw_spec, render_prompt


@dataclass(frozen=True)
class SynthConfig:
    kind: str  # "textbook" | "exercises"
    count: int
    seed: int = 0
    concurrency: int = 8
    max_attempts: int = 4
    run_tests: bool = True
    test_timeout_s: float = 10.0
    template: str | None = None  # None: the built-in template of ``kind``
    topics_file: str | None = None  # topic list or tree (synth topics) instead of the 40 built-in topics
    names_file: str | None = None  # function-name seeds for exercises instead of the built-in verb_noun list
    near_duplicate_jaccard: float = 0.7  # reject answers this similar to a kept one (MinHash, 5-word shingles)


def item_id(kind: str, seed: int, index: int) -> str:
    return f"{kind}-s{seed}-{index:06d}"


@dataclass
class _RunState:
    """What the generation threads share: the dedup indexes, rejection counts, the seed lists."""

    seeds: PromptSeeds
    seen: set
    near: object  # phi_hpc.quality.diversity.NearDuplicateIndex
    lock: object
    rejections: Counter = field(default_factory=Counter)

    def reject(self, problems: list[str], kind: str, message: str) -> None:
        with self.lock:
            self.rejections[kind] += 1
        problems.append(message)


def _answer_record(
    client: ChatClient, config: SynthConfig, index: int, attempt: int, state: _RunState, check, problems: list[str]
) -> dict | None:
    """One attempt: ask, then keep the answer only if complete, well formed and (for exercises) tested."""
    spec = draw_spec(config.seed, index, attempt, state.seeds)
    template = config.template or default_template(config.kind)
    answer = client.complete([{"role": "user", "content": render_prompt(template, spec)}])
    if answer.finish_reason == "length":
        state.reject(problems, "truncated", f"attempt {attempt}: cut off at --max-tokens (finish_reason length)")
        return None
    record = {
        "id": item_id(config.kind, config.seed, index),
        "kind": config.kind,
        "index": index,
        "attempt": attempt,
        "spec": spec,
        "model": client.config.model,
        "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens},
    }
    if config.kind == "textbook":
        record["text"] = answer.content.strip() + "\n"
        return record
    exercise = split_exercise(extract_code(answer.content))
    if exercise is None:
        state.reject(problems, "unparseable", f"attempt {attempt}: no parseable function with a docstring and a body")
        return None
    record.update(
        prompt=exercise.prompt,
        completion=exercise.completion,
        tests=exercise.tests,
        text=exercise.prompt + exercise.completion,
        tests_passed=None,
    )
    if exercise.tests and check is not None:
        passed, error = check(exercise)
        record["tests_passed"] = passed
        if not passed:
            state.reject(problems, "tests_failed", f"attempt {attempt}: its tests fail ({error})")
            return None
    return record


def _attempt_item(
    client: ChatClient,
    config: SynthConfig,
    index: int,
    state: _RunState,
    check: Callable[[Exercise], tuple[bool, str | None]] | None,
) -> tuple[dict | None, list[str]]:
    """Try the item's attempts in order; the first new, complete, well-formed answer wins."""
    problems: list[str] = []
    for attempt in range(config.max_attempts):
        if client.over_budget():
            raise BudgetExhausted(client.over_budget())
        record = _answer_record(client, config, index, attempt, state, check, problems)
        if record is None:
            continue
        digest = normalized_digest(record["text"])
        with state.lock:
            duplicate = digest in state.seen
            if not duplicate:
                state.seen.add(digest)
        if duplicate:
            state.reject(problems, "duplicate", f"attempt {attempt}: duplicate of an earlier item")
            continue
        if state.near is not None and state.near.add(record["text"]) is not None:
            state.reject(problems, "near_duplicate", f"attempt {attempt}: near-duplicate of an earlier item")
            continue
        record["digest"] = digest
        return record, problems
    return None, problems


def synthesize(output: str, endpoint: EndpointConfig, config: SynthConfig, progress=None) -> dict:
    """Generate items ``0..count-1`` that ``output`` does not have yet; returns the run summary."""
    import threading

    from phi_hpc.quality.diversity import DiversityStats, NearDuplicateIndex

    client = ChatClient(endpoint)
    started = time.time()
    state = _RunState(
        PromptSeeds.load(config.kind, config.seed, config.topics_file, config.names_file),
        set(),
        NearDuplicateIndex(config.near_duplicate_jaccard) if config.near_duplicate_jaccard < 1 else None,
        threading.Lock(),
    )
    stats = DiversityStats()

    def reload(record: dict) -> None:  # a resumed run: earlier items count for dedup and statistics
        state.seen.add(record.get("digest") or normalized_digest(record.get("text", "")))
        if state.near is not None:
            state.near.add(record.get("text", ""))
        stats.add(record.get("text", ""), record.get("spec") or {})

    checker = ExerciseChecker(config.test_timeout_s) if config.kind == "exercises" and config.run_tests else None
    try:
        with AppendLog(output, fields=("id",), on_record=reload) as log:
            done = log.ids
            todo = [i for i in range(config.count) if item_id(config.kind, config.seed, i) not in done]
            written, unanswered = 0, Unanswered("index")

            def work(index):
                if client.over_budget():
                    return BudgetExhausted(client.over_budget())
                return _attempt_item(client, config, index, state, checker)

            for index, outcome in answers(work, todo, config.concurrency, progress, f"synth {config.kind}"):
                if not unanswered.answered(index, outcome):
                    continue
                record, problems = outcome
                if record is None:
                    unanswered.fail(index, "; ".join(problems))
                    continue
                log.append(record)
                stats.add(record["text"], record["spec"])
                written += 1
            total = len(log.records)
    finally:
        if checker is not None:
            checker.close()
    return {
        "output": str(output),
        "kind": config.kind,
        "requested": config.count,
        "already_done": len(done),
        "written": written,
        "items": total,
        "rejected_attempts": sum(state.rejections.values()),
        "rejected": dict(state.rejections),
        "failed": unanswered.failed[:20],
        "failed_count": len(unanswered.failed),
        "stopped": unanswered.stopped,
        "requests": client.requests,
        "retries": dict(client.retries),
        "usage": client.accounting(),
        "cost_usd": round(client.cost, 6),
        "diversity": stats.summary(),
        "prompt_space": {"topics": len(state.seeds.topics), "function_names": len(state.seeds.function_names)},
        "repaired_bytes": log.repaired_bytes,
        "seconds": round(time.time() - started, 3),
        "config": asdict(config),
        "model": endpoint.model,
    }
