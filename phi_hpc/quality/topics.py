"""``synth topics``: a topic tree grown by the LLM itself, for prompts that do not repeat.

phi-1 generated its synthetic textbooks over a large space of topics. Starting from the 40 built-in
topics (or a file of one's own), each node is expanded into ``branching`` subtopics by one request,
``depth`` levels down: 40 x 20 x 20 = 16,000 leaves from 840 requests. The output is a resumable
append log: one record per node (``path``, ``depth``, ``leaf``) and one marker per expanded node, so
a killed run re-asks nothing it has. ``synth textbook|exercises --topics FILE`` draws from the leaves.
"""

from __future__ import annotations

import hashlib
import time

from phi_hpc.quality.appendlog import AppendLog
from phi_hpc.quality.diversity import parse_list
from phi_hpc.quality.openai_client import ChatClient, EndpointConfig, Unanswered, answers

TOPIC_PROMPT = (
    'List {n} distinct subtopics of "{path}" that a Python textbook for beginner to intermediate '
    "programmers could teach, one per line, without explanations."
)


def _node_id(path: list[str]) -> str:
    return "topic-" + hashlib.sha256(" > ".join(path).encode("utf-8")).hexdigest()[:20]


def grow_topic_tree(
    output: str,
    endpoint: EndpointConfig,
    roots: list[str],
    branching: int,
    depth: int,
    concurrency: int = 8,
    progress=None,
) -> dict:
    client = ChatClient(endpoint)
    started = time.time()
    nodes: dict[str, list[str]] = {}
    expanded: set[str] = set()

    def reload(record: dict) -> None:
        if "expanded" in record:
            expanded.add(record["expanded"])
        else:
            nodes[record["id"]] = record["path"]

    unanswered, requests_made = Unanswered("path"), 0
    with AppendLog(output, fields=("id",), on_record=reload) as log:
        for root in roots:  # depth 0: the roots themselves
            if _node_id([root]) not in nodes:
                log.append({"id": _node_id([root]), "path": [root], "depth": 0, "leaf": depth == 0})
                nodes[_node_id([root])] = [root]
        for level in range(depth):
            todo = [path for path in nodes.values() if len(path) == level + 1 and _node_id(path) not in expanded]

            def expand(path):
                prompt = TOPIC_PROMPT.format(n=branching, path=" > ".join(path))
                return parse_list(client.chat([{"role": "user", "content": prompt}]), branching)

            for path, outcome in answers(expand, todo, concurrency, progress, f"topics level {level + 1}"):
                if not unanswered.answered(path, outcome):
                    continue
                requests_made += 1
                for child in outcome:
                    child_path = [*path, child]
                    if _node_id(child_path) not in nodes:
                        log.append(
                            {
                                "id": _node_id(child_path),
                                "path": child_path,
                                "depth": level + 1,
                                "leaf": level + 1 == depth,
                            }
                        )
                        nodes[_node_id(child_path)] = child_path
                log.append({"id": "expanded-" + _node_id(path), "expanded": _node_id(path)})
                expanded.add(_node_id(path))
    leaves = sum(1 for path in nodes.values() if len(path) == depth + 1)
    return {
        "output": str(output),
        "roots": len(roots),
        "branching": branching,
        "depth": depth,
        "nodes": len(nodes),
        "leaves": leaves,
        "expanded_this_run": requests_made,
        "failed": unanswered.failed[:20],
        "failed_count": len(unanswered.failed),
        "stopped": unanswered.stopped,
        "requests": client.requests,
        "usage": client.accounting(),
        "seconds": round(time.time() - started, 3),
        "model": endpoint.model,
    }
