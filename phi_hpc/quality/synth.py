"""``synth textbook|exercises``: synthetic training data from an LLM, diverse by construction.

phi-1's lesson (section 2.2): asking a model the same thing many times yields the same few answers.
Diversity has to be put into the prompts. Each item's prompt combines a topic, an audience, a style
and a constraint drawn from fixed lists by a generator seeded with ``(seed, index, attempt)``, so item
17 of seed 0 always asks the same question, in every run and after every restart.

Items have stable ids (``textbook-s0-000017``); the output is append-only and resumable (see
:mod:`phi_hpc.quality.appendlog`). Outputs are de-duplicated on their normalized text: a repeat
(or, for exercises, code that does not parse or fails its own tests) is asked again with the next
attempt's draw, up to ``--max-attempts``.

Exercises follow phi-1's CodeExercises form: a function signature and docstring (``prompt``), then
the body (``completion``); tests the model wrote (top-level ``assert`` lines) are run in
:mod:`phi_hpc.eval.sandbox`. Every record also has ``text`` (prompt + completion), so ``prepare``
reads the file as it is and the finetune loader reads ``prompt``/``completion``.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from phi_hpc.quality.appendlog import AppendLog
from phi_hpc.quality.openai_client import BudgetExhausted, ChatClient, EndpointConfig, Unanswered, answers

TOPICS = (
    "variables and assignment",
    "integer and float arithmetic",
    "string slicing",
    "string formatting",
    "lists and indexing",
    "list comprehensions",
    "tuples and unpacking",
    "dictionaries",
    "sets",
    "if/elif/else",
    "for loops",
    "while loops",
    "break and continue",
    "functions and return values",
    "default and keyword arguments",
    "recursion",
    "iteration with enumerate and zip",
    "sorting with keys",
    "searching a list",
    "binary search",
    "two pointers",
    "stacks",
    "queues",
    "linked lists",
    "binary trees",
    "graph traversal (BFS/DFS)",
    "dynamic programming",
    "greedy algorithms",
    "prime numbers",
    "greatest common divisor",
    "matrices as nested lists",
    "exceptions and validation",
    "classes and methods",
    "generators",
    "string parsing",
    "counting with dictionaries",
    "bit manipulation",
    "date-free calendar arithmetic",
    "simple simulations",
    "text statistics",
)
AUDIENCES = (
    "a complete beginner",
    "a high-school student",
    "a first-year computer science student",
    "a data analyst learning Python",
    "a self-taught programmer preparing for interviews",
    "a scientist who knows math but not programming",
    "a teenager who likes games",
    "a teacher preparing a lesson",
)
STYLES = (
    "a patient textbook chapter",
    "a worked example followed by practice",
    "a Socratic dialogue turned into prose",
    "a step-by-step tutorial",
    "a concise reference with examples",
    "a story-driven explanation",
    "common mistakes and how to fix them",
    "from a naive solution to a better one",
)
CONSTRAINTS = (
    "Use only the standard library.",
    "Keep every function under 15 lines.",
    "Explain the time complexity.",
    "Include an edge case with empty input.",
    "Use descriptive variable names.",
    "Avoid classes.",
    "Use at least one helper function.",
    "Handle invalid input with a clear error.",
    "Show an example input and output.",
    "Do not use recursion.",
)

TEXTBOOK_TEMPLATE = """\
Write a section of a Python textbook about {topic} for {audience}, written as {style}.
{constraint}
Alternate clear natural-language explanations with short, runnable code snippets, so a reader
learns the concept and sees it used. Do not repeat the instructions."""

EXERCISES_TEMPLATE = """\
Write one Python exercise about {topic} for {audience}, in the spirit of {style}.
{constraint} Name the function `{function_name}`.
Format, exactly:
1. A function with a full signature and a docstring that states the task, its inputs and its output.
2. The function body solving it.
3. After the function, three to five top-level `assert` lines that test it.
Answer with the code only, in one ```python block."""

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


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


@dataclass(frozen=True)
class PromptSeeds:
    topics: tuple[str, ...] = TOPICS
    function_names: tuple[str, ...] = ()

    @classmethod
    def for_config(cls, config: SynthConfig) -> PromptSeeds:
        from phi_hpc.quality.diversity import function_names, load_lines

        topics = tuple(load_lines(config.topics_file, "topics")) if config.topics_file else TOPICS
        names = (
            tuple(load_lines(config.names_file, "function-names"))
            if config.names_file
            else tuple(function_names(config.seed))
        )
        return cls(topics, names if config.kind == "exercises" else ())


def draw_spec(seed: int, index: int, attempt: int, seeds: PromptSeeds | None = None) -> dict:
    """The item's prompt ingredients: a pure function of (seed, index, attempt, seed lists)."""
    seeds = seeds or PromptSeeds()
    rng = random.Random(f"{seed}:{index}:{attempt}")
    spec = {
        "topic": rng.choice(seeds.topics),
        "audience": rng.choice(AUDIENCES),
        "style": rng.choice(STYLES),
        "constraint": rng.choice(CONSTRAINTS),
    }
    if seeds.function_names:
        spec["function_name"] = rng.choice(seeds.function_names)
    return spec


PLACEHOLDERS = ("{topic}", "{audience}", "{style}", "{constraint}")


def default_template(kind: str) -> str:
    return TEXTBOOK_TEMPLATE if kind == "textbook" else EXERCISES_TEMPLATE


def load_template(kind: str, path: str | None) -> str:
    """The prompt template: the built-in one, or a user's file using the four placeholders."""
    from phi_hpc.quality.openai_client import read_prompt_template

    return read_prompt_template(path, default_template(kind), "--prompt-template", PLACEHOLDERS, "--print-template")


def render_prompt(template: str, spec: dict) -> str:
    out = template
    for key, value in spec.items():
        out = out.replace("{" + key + "}", value)
    if spec.get("function_name") and spec["function_name"] not in out:  # a custom template without the slot
        out += f"\nName the function `{spec['function_name']}`."
    return out


def item_id(kind: str, seed: int, index: int) -> str:
    return f"{kind}-s{seed}-{index:06d}"


def normalized_digest(text: str) -> str:
    """Whitespace- and case-insensitive content key for de-duplication."""
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def extract_code(answer: str) -> str:
    match = _FENCE.search(answer)
    return (match.group(1) if match else answer).strip("\n") + "\n"


@dataclass(frozen=True)
class Exercise:
    prompt: str  # signature + docstring
    completion: str  # the body
    tests: str  # top-level asserts, possibly empty


def split_exercise(code: str) -> Exercise | None:
    """Cut code into CodeExercises parts; None if it does not parse or has no documented function."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    lines = code.splitlines(keepends=True)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or ast.get_docstring(node) is None:
            continue
        docstring = node.body[0]
        if len(node.body) < 2:
            return None  # a docstring and nothing to complete
        prompt = "".join(lines[: docstring.end_lineno])
        completion = "".join(lines[docstring.end_lineno : node.end_lineno])
        tests = "".join(
            ast.get_source_segment(code, stmt) + "\n"
            for stmt in tree.body
            if isinstance(stmt, ast.Assert) and stmt.lineno > node.end_lineno
        )
        return Exercise(prompt, completion, tests)
    return None


class ExerciseChecker:
    """Runs an exercise's own asserts in the evaluation sandbox (opened on first use)."""

    def __init__(self, timeout_s: float):
        import threading

        self.timeout_s = timeout_s
        self._sandbox = None
        self._lock = threading.Lock()  # generation threads share one sandbox worker; runs take turns

    def __call__(self, exercise: Exercise) -> tuple[bool, str | None]:
        from phi_hpc.eval.sandbox import Program, Sandbox, SandboxLimits

        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(workers=1, limits=SandboxLimits(timeout_s=self.timeout_s))
            result = self._sandbox.run(Program(solution=exercise.prompt + exercise.completion, tests=exercise.tests))
        return result.passed, result.error

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()


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
        PromptSeeds.for_config(config),
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
