"""A deterministic OpenAI-compatible chat server on 127.0.0.1 (real sockets) with injectable faults.

Answers are pure functions of the prompt. The first request for some prompts fails: one in three gets
an HTTP 500, one in three is answered only after ``slow_s`` (longer than the client's timeout), so
every retry path is exercised; ``delay_s`` slows every answer so a run can be killed mid-way.

Every answer carries ``usage`` (prompt and completion tokens, 4 characters a token, as real servers
report them). ``truncate_every``: every Nth prompt (by hash) is answered cut in half with
``finish_reason: length``, as a server stopped by ``max_tokens``. ``near_duplicates``: textbook answers
are one long boilerplate section with only the topic changed, i.e. near-duplicates of each other.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], 16)


def label_answer(prompt: str) -> str:
    code = prompt.split("```")[1] if prompt.count("```") >= 2 else prompt
    documented = code.count('"""') + code.count("# ")
    score = min(10, 2 + documented // 4)
    return f"Score: {score}\nIt has {documented} comments or docstring quotes."


def grade_answer(prompt: str) -> str:
    """A grader that sees through the tests' wrong answer (``return 12345``) and quotes the rubric's format."""
    wrong = "return 12345" in prompt
    return (
        f"The rubric asks for 'Grade: N'. The program {'returns a constant' if wrong else 'solves the task'}.\n"
        f"Grade: {2 if wrong else 9}"
    )


def textbook_answer(prompt: str, near_duplicates: bool = False) -> str:
    topic = re.search(r"about (.+?) for ", prompt).group(1)
    if near_duplicates:
        body = " ".join(f"Sentence {i} of the same generic lesson says the same thing again." for i in range(40))
        return f"# {topic.title()}\n\n{body}\n\n```python\nprint('hello')\n```\n"
    return f"# {topic.title()}\n\nThis section explains {topic}.\n\n```python\nprint({topic!r})\n```\n"


def topics_answer(prompt: str) -> str:
    """A numbered list of subtopics of the topic named in the prompt (deterministic)."""
    count = int(re.search(r"List (\d+)", prompt).group(1))
    parent = re.search(r'subtopics of "(.+?)"', prompt).group(1).split(" > ")[-1]
    return "Here are the subtopics:\n" + "\n".join(f"{i + 1}. {parent} part {i + 1}" for i in range(count))


def exercise_answer(prompt: str, attempt_broken: bool) -> str:
    topic = re.search(r"about (.+?) for ", prompt).group(1)
    named = re.search(r"Name the function `(\w+)`", prompt)
    name = named.group(1) if named else "solve_" + re.sub(r"\W+", "_", topic).strip("_")
    k = _digest(prompt) % 7 + 2
    if attempt_broken:  # a failing self-test: the sandbox must reject it
        return (
            f'```python\ndef {name}(x):\n    """Multiply x by {k}."""\n    return x * {k}\n\n'
            f"assert {name}(1) == {k + 1}\n```"
        )
    return (
        f'```python\ndef {name}(x: int) -> int:\n    """Return x multiplied by {k} ({topic})."""\n'
        f"    result = x * {k}\n    return result\n\nassert {name}(1) == {k}\nassert {name}(0) == 0\n```"
    )


class FakeOpenAI:
    def __init__(
        self,
        delay_s: float = 0.0,
        slow_s: float = 0.0,
        faults: bool = True,
        mode: str = "auto",
        broken_first_exercise: bool = False,
        throttle_first: float | None = None,
        truncate_every: int = 0,
        near_duplicates: bool = False,
    ):
        self.truncate_every, self.near_duplicates = truncate_every, near_duplicates
        self.temperatures: list = []
        self.delay_s, self.slow_s, self.faults, self.mode = delay_s, slow_s, faults, mode
        self.broken_first_exercise = broken_first_exercise
        self.throttle_first = throttle_first  # first request per prompt: 429 with this Retry-After
        self.seen: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, prompt: str, nth: int) -> str:
        if "educational value" in prompt:
            return label_answer(prompt)
        if "grading a student's solution" in prompt:
            return grade_answer(prompt)
        if "subtopics of" in prompt:
            return topics_answer(prompt)
        if "textbook" in prompt:
            return textbook_answer(prompt, self.near_duplicates)
        return exercise_answer(prompt, self.broken_first_exercise and _digest(prompt) % 2 == 0)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                if body["model"] == "missing-model":
                    self._send(404, {"error": {"message": "model missing-model does not exist"}})
                    return
                with fake.lock:
                    fake.temperatures.append(body.get("temperature"))
                    fake.seen[prompt] += 1
                    nth = fake.seen[prompt]
                    fake.events["requests"] += 1
                if fake.throttle_first is not None and nth == 1:
                    self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": str(fake.throttle_first)})
                    return
                kind = _digest(prompt) % 3 if fake.faults and nth == 1 else None
                try:
                    if kind == 0:
                        with fake.lock:
                            fake.events["http_500"] += 1
                        self._send(500, {"error": {"message": "overloaded"}})
                        return
                    if kind == 1:
                        with fake.lock:
                            fake.events["slow"] += 1
                        time.sleep(fake.slow_s)
                    time.sleep(fake.delay_s)
                    content = fake.answer(prompt, nth)
                    finish = "stop"
                    if fake.truncate_every and _digest(prompt) % fake.truncate_every == 0:
                        content, finish = content[: len(content) // 2], "length"
                        with fake.lock:
                            fake.events["truncated"] += 1
                    usage = {"prompt_tokens": len(prompt) // 4 + 1, "completion_tokens": len(content) // 4 + 1}
                    with fake.lock:
                        fake.events["prompt_tokens"] += usage["prompt_tokens"]
                        fake.events["completion_tokens"] += usage["completion_tokens"]
                        fake.events["answered"] += 1
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    self._send(
                        200,
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "model": body["model"],
                            "usage": usage,
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": finish,
                                    "message": {"role": "assistant", "content": content},
                                }
                            ],
                        },
                    )
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: that is the point of the slow answers

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
