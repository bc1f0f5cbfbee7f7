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
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

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


class EndpointError(PhiError):
    """The endpoint refused the request, or kept failing after every retry."""


class ChatClient:
    """Thread-safe: one client is shared by all worker threads of a run (it only counts retries)."""

    def __init__(self, config: EndpointConfig, sleep: Callable[[float], None] = time.sleep):
        if not config.base_url.startswith(("http://", "https://")):
            raise UsageError(f"--endpoint {config.base_url!r} is not an http(s) URL",
                             "e.g. --endpoint http://gpu-node:8000/v1")
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._sleep = sleep
        self._lock = threading.Lock()
        self.retries: Counter[str] = Counter()
        self.requests = 0

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
        payload = {"model": self.config.model, "messages": messages,
                   "temperature": self.config.temperature, "max_tokens": self.config.max_tokens, **params}
        body = json.dumps(payload).encode("utf-8")
        last = ""
        for attempt in range(self.config.max_retries + 1):
            retry_after = None
            with self._lock:
                self.requests += 1
            try:
                answer = self._request(body)
                return answer["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace").strip()
                if exc.code not in RETRYABLE_STATUS:
                    raise EndpointError(f"{self.url} answered HTTP {exc.code}: {detail}",
                                        "check --endpoint, --model and the API key") from None
                last, reason = f"HTTP {exc.code}: {detail}", f"http_{exc.code}"
                retry_after = _retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
            except (TimeoutError, socket.timeout):
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
            delay = min(self.config.backoff_s * 2 ** attempt, self.config.max_backoff_s) * random.uniform(0.5, 1.0)
            if retry_after is not None:  # the server said when (429/503): wait that long, within the cap
                delay = min(max(delay, retry_after), self.config.max_backoff_s)
            self._sleep(delay)
        raise EndpointError(f"{self.url}: gave up after {self.config.max_retries + 1} attempts ({last})",
                            "is the server up? raise --max-retries or --timeout for a slow server")


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
