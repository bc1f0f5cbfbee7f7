"""What each synthetic item asks: the prompt space of ``synth textbook|exercises`` and its templates.

phi-1's lesson (section 2.2): asking a model the same thing many times yields the same few answers.
Diversity has to be put into the prompts. Each item's prompt combines a topic, an audience, a style
and a constraint drawn from fixed lists by a generator seeded with ``(seed, index, attempt)``
(:func:`draw_spec`), so item 17 of seed 0 always asks the same question, in every run and after every
restart. The run loop is :mod:`phi_hpc.quality.synth`; reading the answers is
:mod:`phi_hpc.quality.synth_answers`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PromptSeeds:
    """The lists topics and function names are drawn from: built-in, or read from the user's files."""

    topics: tuple[str, ...] = TOPICS
    function_names: tuple[str, ...] = ()

    @classmethod
    def load(cls, kind: str, seed: int, topics_file: str | None, names_file: str | None) -> PromptSeeds:
        """The seeds of a run (``SynthConfig``'s fields); function names only for exercises."""
        from phi_hpc.quality.diversity import function_names, load_lines

        topics = tuple(load_lines(topics_file, "topics")) if topics_file else TOPICS
        names = tuple(load_lines(names_file, "function-names")) if names_file else tuple(function_names(seed))
        return cls(topics, names if kind == "exercises" else ())


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
