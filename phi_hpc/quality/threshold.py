"""Cut by budget: which quality threshold keeps a target number of tokens (or share of documents).

phi-1 kept about 6B of 35B tokens (~17%): a probability of 0.5 says nothing about that. Given every
document's score and token count, the kept tokens as a function of the threshold is a step function
that only changes at the scores themselves; the best threshold is one of them, found by sorting once.
The prepare filter keeps ``score >= threshold``, so the threshold chosen is a document's own score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phi_hpc.errors import UsageError


def read_source(source: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(scores, tokens or None, kind) from a scores folder or a prepare audit.jsonl / output folder."""
    path = Path(source)
    if path.is_dir() and (path / "plan.json").is_file():
        from phi_hpc.quality.scoring import load_scores

        table = load_scores(path)
        return table.scores, (table.tokens if table.has_tokens else None), "scores"
    audit = path / "audit.jsonl" if path.is_dir() else path
    if not audit.is_file():
        raise UsageError(
            f"{source}: neither a quality scores folder nor a prepare audit",
            "pass the -o folder of `quality score`, or a prepare OUT/audit.jsonl",
        )
    return _audit_scores(audit), None, "audit"


def _audit_scores(audit: Path) -> np.ndarray:
    """Every quality score the audit lists: kept documents (``scored_by``) and dropped ones (``filter``)."""
    from phi_hpc.fileio import iter_jsonl

    scores = []
    for _, entry in iter_jsonl(audit, "the audit is damaged; rerun prepare"):
        if not isinstance(entry, dict) or entry.get("score") is None:
            continue
        if entry.get("scored_by") == "quality" or (
            entry.get("removed") == "filtered" and entry.get("filter") == "quality"
        ):
            scores.append(float(entry["score"]))
    if not scores:
        raise UsageError(
            f"{audit}: no quality scores in this audit",
            "run prepare with --quality-model (threshold 0 scores everything)",
        )
    return np.asarray(scores, dtype=np.float64)


def _kept_curve(scores: np.ndarray, tokens: np.ndarray | None):
    """Distinct thresholds (descending) and, for each, documents and tokens with score >= it."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    last_of_value = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # ties are kept together
    documents = last_of_value + 1
    kept_tokens = np.cumsum(tokens[order])[last_of_value] if tokens is not None else None
    return ranked[last_of_value], documents, kept_tokens


def table(scores: np.ndarray, tokens: np.ndarray | None, steps: int) -> list[dict]:
    """Rows at evenly spaced quantiles of the scores, highest threshold first."""
    total_tokens = int(tokens.sum()) if tokens is not None else None
    rows = []
    for q in np.linspace(1.0, 0.0, steps + 1)[1:]:
        threshold = float(np.quantile(scores, q, method="higher")) if len(scores) else 0.0
        kept = scores >= threshold
        kept_tokens = int(tokens[kept].sum()) if tokens is not None else None
        rows.append(
            {
                "threshold": threshold,
                "documents": int(kept.sum()),
                "keep_rate": float(kept.mean()) if len(scores) else 0.0,
                "tokens": kept_tokens,
                "token_share": kept_tokens / total_tokens if total_tokens else None,
            }
        )
    return rows


def choose(
    scores: np.ndarray, tokens: np.ndarray | None, target_tokens: float | None = None, target_keep: float | None = None
) -> dict:
    """The threshold whose kept tokens (or keep rate) is closest to the target."""
    if len(scores) == 0:
        raise UsageError("no scores to choose a threshold from")
    thresholds, documents, kept_tokens = _kept_curve(scores, tokens)
    if target_tokens is not None:
        if tokens is None:
            raise UsageError(
                "--target-tokens needs token counts",
                "score with --tokenizer (quality score ... --tokenizer tok.json), or use --target-keep",
            )
        if target_tokens <= 0:
            raise UsageError(f"--target-tokens {target_tokens:g} must be > 0")
        best = int(np.argmin(np.abs(kept_tokens - target_tokens)))
        error = (float(kept_tokens[best]) - target_tokens) / target_tokens
    else:
        best = int(np.argmin(np.abs(documents / len(scores) - target_keep)))
        error = (documents[best] / len(scores) - target_keep) / target_keep
    return {
        "threshold": float(thresholds[best]),
        "documents": int(documents[best]),
        "keep_rate": float(documents[best] / len(scores)),
        "tokens": int(kept_tokens[best]) if kept_tokens is not None else None,
        "target_tokens": target_tokens,
        "target_keep": target_keep,
        "relative_error": error,
        # documents sharing the chosen score: a threshold keeps all or none of them, which is what
        # limits how closely a budget can be hit
        "tied_at_threshold": int((scores == thresholds[best]).sum()),
    }
