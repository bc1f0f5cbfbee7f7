"""A small client for OpenAI-compatible chat endpoints (vLLM on the cluster, or a hosted API).

Standard library only (``urllib`` + threads), so labelling and synthesis run on any login node
without an SDK. Long jobs against a busy server meet 5xx answers, 429s and timeouts; those are
retried with exponential backoff and jitter. Other 4xx answers (a wrong model name, a bad key) will
not get better by waiting, so they fail at once with the server's message.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import itertools
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from phi_hpc.errors import PhiError, UsageError

T = TypeVar("T")
R = TypeVar("R")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class EndpointConfig:
    base_url: str  # e.g. http://gpu-node:8000/v1 (the part before /chat/completions)
    model: str
    api_key_env: str = "OPENAI_API_KEY"  # read at request time; sent as a Bearer token when set
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_s: float = 1.0  # first wait; doubles per retry
    max_backoff_s: float = 60.0
    temperature: float = 1.0
    max_tokens: int = 1024
    # Accounting from each answer's ``usage``: dollars per million prompt/completion tokens, and a cap
    # (dollars, or tokens when no price is given) after which no new request is sent.
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    spend_cap: float | None = None  # dollars (with prices) ...
    token_cap: int | None = None  # ... or prompt + completion tokens
    # Proactive rate limits shared by every thread of the run (0: none): requests are spaced out
    # before the server has to answer 429.
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0


def read_prompt_template(
    path: str | None, default: str, option: str, placeholders: tuple[str, ...], show_option: str
) -> str:
    """A user's prompt template (``option FILE``), which must hold every placeholder; ``default`` without one.

    Shared by ``quality label``, ``synth`` and ``eval grade``: a template missing a placeholder would send
    every item the same prompt, so it is refused up front. ``show_option`` prints the default.
    """
    if path is None:
        return default
    from pathlib import Path

    template_path = Path(path)
    if not template_path.is_file():
        raise UsageError(f"{option} {path} does not exist", f"write one; {show_option} shows the default")
    template = template_path.read_text(encoding="utf-8")
    missing = [p for p in placeholders if p not in template]
    if missing:
        raise UsageError(
            f"{option} {path} lacks {', '.join(missing)}",
            f"put {' and '.join(placeholders)} in it; {show_option} shows the default",
        )
    return template


class EndpointError(PhiError):
    """The endpoint refused the request, or kept failing after every retry."""


class BudgetExhausted(EndpointError):
    """The spend or token cap was reached: no further request is sent."""


@dataclass(frozen=True)
class ChatAnswer:
    content: str
    finish_reason: str | None  # "stop"; "length" when cut at max_tokens (the answer is incomplete)
    prompt_tokens: int
    completion_tokens: int


class RateLimiter:
    """Token buckets for requests/minute and tokens/minute, one per client, shared by its threads.

    ``acquire(tokens)`` waits until both buckets allow the request; the waiting happens outside the
    lock, and each caller reserves its slot before sleeping, so threads are spaced out instead of
    all firing when the window opens (the cause of 429 storms with per-thread backoff)."""

    def __init__(
        self,
        requests_per_minute: float,
        tokens_per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_request = 0.0
        self._next_tokens = 0.0
        self.waited_s = 0.0

    @property
    def active(self) -> bool:
        return self.rpm > 0 or self.tpm > 0

    def acquire(self, tokens: int) -> float:
        """Reserve a request of about ``tokens`` tokens; returns the seconds waited."""
        if not self.active:
            return 0.0
        with self._lock:
            now = self._clock()
            start = max(now, self._next_request if self.rpm > 0 else now, self._next_tokens if self.tpm > 0 else now)
            if self.rpm > 0:
                self._next_request = start + 60.0 / self.rpm
            if self.tpm > 0:
                self._next_tokens = start + 60.0 * tokens / self.tpm
            wait = start - now
            self.waited_s += wait
        if wait > 0:
            self._sleep(wait)
        return wait


class ChatClient:
    """Thread-safe: one client is shared by all worker threads of a run (it only counts retries)."""

    def __init__(self, config: EndpointConfig, sleep: Callable[[float], None] = time.sleep):
        if not config.base_url.startswith(("http://", "https://")):
            raise UsageError(
                f"--endpoint {config.base_url!r} is not an http(s) URL", "e.g. --endpoint http://gpu-node:8000/v1"
            )
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._sleep = sleep
        self._lock = threading.Lock()
        self.retries: Counter[str] = Counter()
        self.requests = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute, sleep=sleep)

    @property
    def cost(self) -> float:
        c = self.config
        return (self.prompt_tokens * c.price_input_per_mtok + self.completion_tokens * c.price_output_per_mtok) / 1e6

    def over_budget(self) -> str | None:
        """Why no new request may be sent, or None."""
        c = self.config
        with self._lock:
            if c.spend_cap is not None and self.cost >= c.spend_cap:
                return f"spend cap ${c.spend_cap:g} reached (${self.cost:.4f} spent)"
            if c.token_cap is not None and self.prompt_tokens + self.completion_tokens >= c.token_cap:
                return f"token cap {c.token_cap} reached ({self.prompt_tokens + self.completion_tokens} tokens)"
        return None

    def accounting(self) -> dict:
        """Tokens and dollars so far, for run summaries."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost, 6),
            "spend_cap_usd": self.config.spend_cap,
            "token_cap": self.config.token_cap,
            "rate_limit_wait_s": round(self.limiter.waited_s, 3),
        }

    def _count(self, reason: str) -> None:
        with self._lock:
            self.retries[reason] += 1

    def _request(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))

    def chat(self, messages: list[dict], **params) -> str:
        """The first choice's message content; retries transient failures, raises EndpointError otherwise."""
        return self.complete(messages, **params).content

    def _record_usage(self, answer: dict, prompt_estimate: int) -> ChatAnswer:
        choice = answer["choices"][0]
        content = choice["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("content is not a string")
        usage = answer.get("usage") or {}
        # Servers that send no usage are counted by estimate (4 characters a token), never as free.
        prompt = int(usage.get("prompt_tokens", prompt_estimate))
        completion = int(usage.get("completion_tokens", len(content) // 4 + 1))
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion
        return ChatAnswer(content, choice.get("finish_reason"), prompt, completion)

    def complete(self, messages: list[dict], **params) -> ChatAnswer:
        """The first choice with its finish reason and token counts (added to the run's accounting)."""
        payload = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            **params,
        }
        body = json.dumps(payload).encode("utf-8")
        prompt_estimate = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
        last = ""
        for attempt in range(self.config.max_retries + 1):
            retry_after = None
            stop = self.over_budget()
            if stop:
                raise BudgetExhausted(
                    f"{stop}: no further requests",
                    "raise --spend-cap/--token-cap to continue; rerun the same command to resume",
                )
            self.limiter.acquire(prompt_estimate + int(payload["max_tokens"] or 0))
            with self._lock:
                self.requests += 1
            try:
                return self._record_usage(self._request(body), prompt_estimate)
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace").strip()
                if exc.code not in RETRYABLE_STATUS:
                    raise EndpointError(
                        f"{self.url} answered HTTP {exc.code}: {detail}", "check --endpoint, --model and the API key"
                    ) from None
                last, reason = f"HTTP {exc.code}: {detail}", f"http_{exc.code}"
                retry_after = _retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
            except TimeoutError:
                last, reason = f"no answer within {self.config.timeout_s}s", "timeout"
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    last, reason = f"no answer within {self.config.timeout_s}s", "timeout"
                else:
                    last, reason = f"connection failed: {exc.reason}", "connection"
            except (ConnectionError, http.client.HTTPException) as exc:
                last, reason = f"connection failed: {exc!r}", "connection"
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
                last, reason = "malformed answer (no choices[0].message.content)", "malformed"
            if attempt == self.config.max_retries:
                break
            self._count(reason)
            delay = min(self.config.backoff_s * 2**attempt, self.config.max_backoff_s) * random.uniform(0.5, 1.0)
            if retry_after is not None:  # the server said when (429/503): wait that long, within the cap
                delay = min(max(delay, retry_after), self.config.max_backoff_s)
            self._sleep(delay)
        raise EndpointError(
            f"{self.url}: gave up after {self.config.max_retries + 1} attempts ({last})",
            "is the server up? raise --max-retries or --timeout for a slow server",
        )


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is rare for APIs and ignored)."""
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def bounded_map(func: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[tuple[T, R | BaseException]]:
    """Apply ``func`` on ``concurrency`` threads, yielding ``(item, result or exception)`` as they finish.

    At most ``concurrency`` calls are in flight and at most that many items are read ahead, so a
    million-item input costs no memory, and results reach the caller (the only writer) at once.
    """
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1 (got {concurrency})")
    iterator = iter(items)
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        pending = {}
        for item in itertools.islice(iterator, concurrency):
            pending[pool.submit(func, item)] = item
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                exc = future.exception()
                yield item, (exc if exc is not None else future.result())
                for nxt in itertools.islice(iterator, 1):
                    pending[pool.submit(func, nxt)] = nxt


def answers(
    func: Callable[[T], R], items: list[T], concurrency: int, progress=None, description: str = ""
) -> Iterator[tuple[T, R | EndpointError]]:
    """:func:`bounded_map` for the LLM commands: advances a progress bar, and yields the endpoint's
    refusals (:class:`EndpointError`, :class:`BudgetExhausted`) for the caller to count, while any
    other exception is a bug and is raised."""
    task = progress.add_task(description, total=len(items)) if progress else None
    for item, outcome in bounded_map(func, items, concurrency):
        if task is not None:
            progress.advance(task)
        if isinstance(outcome, BaseException) and not isinstance(outcome, EndpointError):
            raise outcome
        yield item, outcome


@dataclass
class Unanswered:
    """The items of an LLM command that gave no answer, in the two kinds its summary tells apart: a budget stop
    (the spend cap was reached; the items are left for a rerun, and the first message says why) and a failed
    item (the endpoint refused it, or its answer was unusable; kept with its error, under ``key``)."""

    key: str  # what names an item in ``failed``: "index", "path", ...
    failed: list = field(default_factory=list)
    stopped: str | None = None

    def answered(self, item: Any, outcome: Any) -> bool:
        """True for an answer; a :class:`BudgetExhausted` or :class:`EndpointError` is recorded instead."""
        if isinstance(outcome, BudgetExhausted):
            self.stopped = self.stopped or outcome.message
            return False
        if isinstance(outcome, EndpointError):
            self.fail(item, outcome.message)
            return False
        return True

    def fail(self, item: Any, error: str) -> None:
        self.failed.append({self.key: item, "error": error})
