"""``quality label``: ask an LLM how educational each sampled file is (the paper used GPT-4 on ~100k files).

The prompt is a template file users are expected to edit (``--print-template`` shows the default);
``{code}`` is replaced by the file, cut to ``--max-chars``. The answer must contain ``Score: N``
(0-10); the label is ``score >= --positive-score``. Unparseable answers are kept with ``label: null``
so a person can look at them; ``quality train`` skips them.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from phi_hpc.quality.appendlog import AppendLog
from phi_hpc.quality.openai_client import ChatClient, EndpointConfig, EndpointError, answers, read_prompt_template

DEFAULT_TEMPLATE = """\
Here is a file of source code.

```
{code}
```

Determine its educational value for a student whose goal is to learn basic coding concepts.
Clear, self-contained code that explains what it does (meaningful names, comments, docstrings,
one idea at a time) is valuable; configuration, boilerplate, generated code and code that only makes
sense inside a large project are not.

Answer on the first line with "Score: N", where N is an integer from 0 (no educational value) to
10 (excellent textbook material), then give one sentence explaining why.
"""

SCORE_RE = re.compile(r"score\s*[:=]\s*(\d+(?:\.\d+)?)", re.I)


@dataclass(frozen=True)
class LabelConfig:
    sample: int | None = None  # label this many documents (seeded reservoir sample); None = all
    seed: int = 0
    max_chars: int = 6000  # a file's beginning is enough to judge it, and keeps prompts short
    positive_score: float = 6.0
    concurrency: int = 8


def load_template(path: str | None) -> str:
    return read_prompt_template(path, DEFAULT_TEMPLATE, "--prompt-template", ("{code}",), "--print-template")


def parse_score(answer: str) -> float | None:
    match = SCORE_RE.search(answer)
    if not match:
        return None
    score = float(match.group(1))
    return score if 0 <= score <= 10 else None


def document_id(text: str) -> str:
    """Content-addressed: the same file gets the same id in every run, wherever it was read from."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def sample_documents(documents: Iterable[tuple[str, str]], sample: int | None, seed: int) -> list[tuple[str, str]]:
    """Reservoir sample of (text, origin): uniform, one pass, memory bounded by ``sample``."""
    if sample is None:
        return list(documents)
    rng = random.Random(seed)
    reservoir: list[tuple[str, str]] = []
    for seen, doc in enumerate(documents):
        if seen < sample:
            reservoir.append(doc)
        else:
            slot = rng.randrange(seen + 1)
            if slot < sample:
                reservoir[slot] = doc
    return reservoir


def label_documents(
    documents: list[tuple[str, str]],
    output: str,
    endpoint: EndpointConfig,
    config: LabelConfig = LabelConfig(),
    template: str = DEFAULT_TEMPLATE,
    progress=None,
) -> dict:
    """Label every document not yet in ``output``; returns the run summary."""
    client = ChatClient(endpoint)
    started = time.time()
    with AppendLog(output, fields=("id",)) as log:  # texts stay on disk
        done = log.ids
        todo, seen = [], set(done)
        for text, origin in documents:
            doc_id = document_id(text)
            if doc_id not in seen:  # identical files are labelled once
                seen.add(doc_id)
                todo.append((doc_id, text, origin))

        def ask(item):
            _, text, _ = item
            prompt = template.replace("{code}", text[: config.max_chars])
            return client.chat([{"role": "user", "content": prompt}])

        labelled = unparsed = failed = 0
        errors: list[str] = []
        for (doc_id, text, origin), answer in answers(ask, todo, config.concurrency, progress, "labelling"):
            if isinstance(answer, EndpointError):
                failed += 1
                errors.append(answer.message)
                continue
            score = parse_score(answer)
            unparsed += score is None
            label = None if score is None else int(score >= config.positive_score)
            log.append(
                {
                    "id": doc_id,
                    "origin": origin,
                    "text": text,
                    "score": score,
                    "label": label,
                    "answer": answer,
                    "model": endpoint.model,
                }
            )
            labelled += 1
    return {
        "output": str(output),
        "documents": len(documents),
        "already_done": len(done),
        "labelled": labelled,
        "unparsed_answers": unparsed,
        "failed": failed,
        "errors": errors[:5],
        "requests": client.requests,
        "retries": dict(client.retries),
        "repaired_bytes": log.repaired_bytes,
        "seconds": round(time.time() - started, 3),
        "config": asdict(config),
        "model": endpoint.model,
    }
