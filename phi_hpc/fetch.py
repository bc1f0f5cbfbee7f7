"""Everything phi-hpc takes from the network, in one place: tokenizers (by Hugging Face hub id) and
files at pinned URLs (MBPP). Run on the login node; compute nodes get the cached paths.

Why: compute nodes of most clusters have no internet. ``submit`` resolves every tokenizer and dataset a
job will read *before* queueing it (:func:`resolve_tokenizer`, :func:`phi_hpc.eval.tasks.fetch_mbpp`)
and hands the job local paths, so a job never downloads.

Nothing half-written is ever used or left behind: a download goes to a temporary name in the cache
folder, is checked (sha256 pin for URLs; for hub files the hash the hub itself published, the blob
name huggingface_hub stores it under) and only then renamed into place. A corrupted or truncated file
is deleted with a one-line error.

A tokenizer is named the way the ecosystem names it: a ``tokenizer.json`` file, a tokenizer folder, or
a hub id such as ``microsoft/phi-1`` (optionally ``@REVISION``), resolved through huggingface_hub's
cache; ``HF_HUB_OFFLINE=1`` and ``HF_ENDPOINT`` are honoured.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.fileio import atomic_write

TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
PHI1_TOKENIZER = "microsoft/phi-1"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?$")


# ------------------------------------------------------------------------------------ URL downloads
def download(url: str, target: Path, sha256: str, what: str) -> Path:
    """``url`` -> ``target``, only if its sha256 is ``sha256``; otherwise nothing is written."""
    target = Path(target)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_write(target, "wb") as out:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
            if digest.hexdigest() != sha256:  # raised inside: atomic_write deletes the temporary file
                raise _Mismatch(digest.hexdigest())
    except _Mismatch as exc:
        raise PhiError(
            f"{url}: sha256 {exc.args[0]} does not match the pinned {sha256} (corrupted, truncated "
            f"or changed upstream); nothing was kept",
            f"retry, or pass a verified {what} file",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PhiError(
            f"could not download {what} from {url}: {exc}",
            f"run this on a machine with network access (a login node), or pass a local {what} file",
        ) from None
    return target


class _Mismatch(Exception):
    pass


# ------------------------------------------------------------------------------------ tokenizers
def is_hub_id(spec: str) -> bool:
    """``owner/name`` that is not a path on disk (``data/tok.json`` with a suffix is a missing path)."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).exists() and not spec.split("@")[0].endswith(".json")


def resolve_tokenizer(spec: str, option: str = "--tokenizer") -> Path:
    """The local file defining the tokenizer ``spec`` names (file, folder or hub id), or a one-line error."""
    spec = str(spec)
    candidate = Path(spec).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        for name in TOKENIZER_FILES:
            if (candidate / name).is_file():
                return candidate / name
        raise UsageError(
            f"{option} {spec}: folder has no tokenizer.json (or vocab.json + merges.txt)",
            "point it at a tokenizer.json, a tokenizer folder or a hub id such as microsoft/phi-1",
        )
    if is_hub_id(spec):
        return hub_tokenizer(spec, option)
    raise UsageError(
        f"{option} {spec}: no such file or folder, and not a hub id (owner/name)",
        "give a tokenizer.json, a tokenizer folder or a hub id such as microsoft/phi-1",
    )


def fetch_hint(spec: str) -> str:
    repo = spec.split("@")[0]
    return (
        f"on a login node run `phi-hpc fetch tokenizer {spec}` or `hf download {repo} tokenizer.json`, "
        f"or pass a tokenizer.json path"
    )


def hub_tokenizer(spec: str, option: str = "--tokenizer") -> Path:
    """``owner/name[@rev]`` -> the cached ``tokenizer.json`` (downloaded once, checked, unless offline)."""
    repo, _, revision = spec.partition("@")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a dependency of transformers/tokenizers installs
        raise UsageError(f"{option} {spec}: a hub id needs huggingface_hub", "pip install huggingface_hub") from None
    try:
        with _quiet_hub():
            path = Path(hf_hub_download(repo, "tokenizer.json", revision=revision or None))
    except Exception as exc:  # offline and not cached, unknown repo, network or consistency errors
        _drop_incomplete(repo)
        raise UsageError(
            f"{option} {spec}: tokenizer.json is not in the Hugging Face cache and could not be "
            f"downloaded ({_hub_reason(exc)})",
            fetch_hint(spec),
        ) from None
    verify_hub_blob(path, f"{option} {spec}")
    return path


def _hub_reason(exc: Exception) -> str:
    """huggingface_hub's errors are paragraphs; the one-line error needs their gist."""
    kind = type(exc).__name__
    if _offline() and kind in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return "HF_HUB_OFFLINE is set"
    gist = {
        "LocalEntryNotFoundError": "no connection to the hub",
        "RepositoryNotFoundError": "no such repository",
        "GatedRepoError": "a gated repository: log in with `hf auth login`",
        "EntryNotFoundError": "the repository has no tokenizer.json",
        "RemoteEntryNotFoundError": "the repository has no tokenizer.json",
        "RevisionNotFoundError": "no such revision",
    }.get(kind)
    if gist:
        return gist
    text = " ".join(str(exc).split())
    return f"{kind}: {text[:160]}" if text else kind


class _quiet_hub:
    """huggingface_hub logs a warning per retry; the one-line error says what matters."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("huggingface_hub")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        return False


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub endpoint answers a TCP connection (the demo asks before waiting on retries)."""
    import socket
    import urllib.parse

    if _offline():
        return False
    from huggingface_hub.constants import ENDPOINT

    parsed = urllib.parse.urlparse(ENDPOINT)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def cached_hub_tokenizer(spec: str) -> Path | None:
    """The cached ``tokenizer.json`` of hub id ``spec`` without any network access, else None."""
    repo, _, revision = spec.partition("@")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    found = try_to_load_from_cache(repo, "tokenizer.json", revision=revision or None)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _repo_cache(repo: str) -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"


def _drop_incomplete(repo: str) -> None:
    """huggingface_hub keeps ``*.incomplete`` parts to resume; a failed fetch must leave nothing behind."""
    try:
        blobs = _repo_cache(repo) / "blobs"
    except Exception:  # pragma: no cover
        return
    for part in blobs.glob("*.incomplete") if blobs.is_dir() else ():
        part.unlink(missing_ok=True)


def verify_hub_blob(path: Path, what: str) -> None:
    """The cached file must hash to the name huggingface_hub stored it under (the hub's ETag: the
    sha256 of an LFS file, the git blob sha1 of a small one). Else delete it and say so."""
    blob = path.resolve()
    etag = blob.name
    if blob.parent.name != "blobs" or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", etag):
        return  # not a hub cache layout we know (e.g. a local_dir download): nothing to compare against
    data = blob.read_bytes()
    actual = (
        hashlib.sha256(data).hexdigest()
        if len(etag) == 64
        else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    )
    if actual != etag:
        blob.unlink(missing_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink(missing_ok=True)
        raise UsageError(
            f"{what}: the downloaded {path.name} hashes to {actual}, not the hub's {etag} "
            "(corrupted or truncated); removed from the cache",
            "run the command again to download it anew",
        )
