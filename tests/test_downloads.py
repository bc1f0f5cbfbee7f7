"""The download path (issue 10, acceptance 6) against a local HTTP server on 127.0.0.1 serving the files:
MBPP through its URL override, a tokenizer through huggingface_hub with HF_ENDPOINT. A corrupted or a
truncated download is rejected by its hash and leaves nothing in the cache."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from phi_hpc.errors import PhiError
from tests.conftest import REPO_ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FileServer:
    """Serves ``files[path] = bytes``; ``mode`` good | corrupt (same size, one byte changed) | truncate
    (announces the full size, sends half, closes)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.mode = "good"
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _head(self):
                body = server.files.get(self.path.split("?")[0])
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", f'"{server.etags.get(self.path, "x")}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                return body

            def do_HEAD(self):
                self._head()

            def do_GET(self):
                body = self._head()
                if body is None:
                    return
                if server.mode == "corrupt":
                    body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
                elif server.mode == "truncate":
                    body = body[: len(body) // 2]
                self.wfile.write(body)
                self.wfile.flush()
                if server.mode == "truncate":
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    served = FileServer()
    yield served
    served.httpd.shutdown()


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("mode", ["corrupt", "truncate"])
def test_mbpp_download_from_a_local_server_is_checked_and_atomic(server, mode, mbpp_path, tmp_path, monkeypatch):
    from phi_hpc.eval.tasks import fetch_mbpp

    server.files["/mbpp/mbpp.jsonl"] = mbpp_path.read_bytes()
    monkeypatch.setenv("PHI_HPC_MBPP_URL", server.url + "/mbpp")
    bad_cache = tmp_path / f"cache-{mode}"
    server.mode = mode
    with pytest.raises(PhiError, match="sha256|could not download"):
        fetch_mbpp("mbpp.jsonl", cache_dir=bad_cache)
    assert _leftovers(bad_cache) == []  # nothing half-written, not even a temporary file

    server.mode = "good"
    cache = tmp_path / "cache"
    path = fetch_mbpp("mbpp.jsonl", cache_dir=cache)  # the default pinned sha256 of the official file
    assert path.read_bytes() == mbpp_path.read_bytes() and _leftovers(cache) == ["mbpp.jsonl"]


def _fetch_tokenizer(server: FileServer, hf_home: Path, repo: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(hf_home), PYTHONPATH=str(REPO_ROOT), HF_HUB_DISABLE_XET="1")
    return subprocess.run(
        [sys.executable, "-m", "phi_hpc", "fetch", "tokenizer", repo],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("mode", ["corrupt", "truncate"])
def test_hub_tokenizer_from_a_local_endpoint_is_checked(server, mode, codegen_tokenizer, tmp_path):
    body = codegen_tokenizer.read_bytes()
    path = "/test-org/tiny-tok/resolve/main/tokenizer.json"
    server.files[path] = body
    server.etags[path] = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()  # the hub's ETag of a git file

    server.mode = mode
    bad_home = tmp_path / f"hf-{mode}"
    failed = _fetch_tokenizer(server, bad_home, "test-org/tiny-tok")
    assert failed.returncode != 0
    assert failed.stderr.startswith("error: --tokenizer test-org/tiny-tok:") and len(failed.stderr.splitlines()) == 1
    assert (
        ("hashes to" in failed.stderr and "removed from the cache" in failed.stderr)
        if mode == "corrupt"
        else "could not be downloaded" in failed.stderr
    )
    assert not [f for f in _leftovers(bad_home / "hub") if "/blobs/" in f or "/snapshots/" in f]

    server.mode = "good"
    home = tmp_path / "hf"
    done = _fetch_tokenizer(server, home, "test-org/tiny-tok")
    assert done.returncode == 0, done.stderr
    fetched = Path(done.stdout.strip())
    assert fetched.name == "tokenizer.json" and fetched.read_bytes() == body
    # and offline afterwards, from the cache only
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home), PYTHONPATH=str(REPO_ROOT))
    again = subprocess.run(
        [sys.executable, "-m", "phi_hpc", "fetch", "tokenizer", "test-org/tiny-tok"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0 and Path(again.stdout.strip()).read_bytes() == body
