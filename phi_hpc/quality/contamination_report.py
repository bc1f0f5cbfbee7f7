"""The paper's section 5 workflow around the checks: a tau sweep, a per-problem contamination table,
a cleaned copy of the data, and the list of problems to leave out of an evaluation.

One pass over the documents at the sweep's lowest tau (whose pre-filter is the loosest) records, per
document, its 13-gram finding, its best AST similarity and its embedding finding; every tau of the
sweep is then a threshold on those numbers, so a sweep costs one pass, not one per tau. (At a higher
tau alone the pre-filter would be stricter, so a sweep finds at least what separate runs would.)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from phi_hpc.errors import UsageError


def parse_sweep(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        taus = sorted({float(part) for part in text.split(",") if part.strip()}, reverse=True)
    except ValueError:
        raise UsageError(
            f"--sweep {text!r}: not a comma-separated list of numbers", "e.g. --sweep 0.95,0.9,0.85,0.8"
        ) from None
    if not taus or not all(0 < t <= 1 for t in taus):
        raise UsageError(f"--sweep {text!r}: every tau must be in (0, 1]", "e.g. --sweep 0.95,0.9,0.85,0.8")
    return taus


@dataclass
class DocumentVerdict:
    origin: str
    ngram: object | None  # Finding
    ast: object | None  # Finding at the loosest tau
    embedding: object | None

    def flagged_at(self, tau: float) -> object | None:
        """The finding that flags this document at ``tau`` (13-gram first, as the filter reports)."""
        if self.ngram is not None:
            return self.ngram
        if self.ast is not None and self.ast.score >= tau:
            return self.ast
        return self.embedding


@dataclass
class ContaminationTally:
    """Counts per tau and per benchmark problem, filled document by document."""

    taus: list[float]
    main_tau: float
    problems: dict = field(default_factory=dict)  # problem -> {"ngram": n, "embedding": n, "ast": {tau: n}}
    flagged: dict = field(default_factory=dict)  # tau -> documents flagged

    def add(self, verdict: DocumentVerdict) -> None:
        for tau in self.taus:
            if verdict.flagged_at(tau) is not None:
                self.flagged[tau] = self.flagged.get(tau, 0) + 1
        for method, finding in (("ngram", verdict.ngram), ("embedding", verdict.embedding)):
            if finding is not None:
                for problem in finding.problem.split(","):
                    self._row(problem)[method] += 1
        if verdict.ast is not None:
            for problem in verdict.ast.problem.split(","):
                row = self._row(problem)
                for tau in self.taus:
                    if verdict.ast.score >= tau:
                        row["ast"][tau] += 1

    def _row(self, problem: str) -> dict:
        if problem not in self.problems:
            self.problems[problem] = {"ngram": 0, "embedding": 0, "ast": {tau: 0 for tau in self.taus}}
        return self.problems[problem]

    def table(self, all_problems: list[str]) -> list[dict]:
        """One row per benchmark problem (clean ones too), ``contaminated`` at the main tau."""
        rows = []
        for problem in all_problems:
            row = self.problems.get(problem) or {"ngram": 0, "embedding": 0, "ast": {t: 0 for t in self.taus}}
            documents = row["ngram"] + row["embedding"] + row["ast"].get(self.main_tau, 0)
            rows.append(
                {
                    "problem": problem,
                    "ngram": row["ngram"],
                    "embedding": row["embedding"],
                    "ast": {f"{tau:g}": n for tau, n in row["ast"].items()},
                    "contaminated": documents > 0,
                }
            )
        return rows

    def sweep(self, documents: int) -> list[dict]:
        contaminated = {
            tau: sum(1 for r in self.problems.values() if r["ngram"] or r["embedding"] or r["ast"][tau])
            for tau in self.taus
        }
        return [
            {
                "tau": tau,
                "documents_flagged": self.flagged.get(tau, 0),
                "share": self.flagged.get(tau, 0) / documents if documents else 0.0,
                "problems_contaminated": contaminated[tau],
            }
            for tau in self.taus
        ]


def check_document(decontaminator, text: str, origin: str, embedding=None) -> DocumentVerdict:
    from phi_hpc.quality.tokens import SHARED_CACHE

    tokens = SHARED_CACHE.get(text)
    return DocumentVerdict(
        origin, decontaminator.ngram_finding(tokens), decontaminator.ast_finding(text, tokens.hashes), embedding
    )


def loosest(config, taus: list[float]):
    """The config to run a sweep with: its tau is the lowest of the sweep and of the main one."""
    lowest = min([config.ast_threshold, *taus])
    return dataclasses.replace(config, ast_threshold=lowest)


def benchmark_problem_names(decontaminator) -> list[str]:
    seen: dict[str, None] = {}
    for part in decontaminator.benchmarks.parts:
        seen.setdefault(part.problem, None)
    return list(seen)


def write_table(path: str, rows: list[dict]) -> None:
    from phi_hpc.fileio import atomic_write

    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")


def run_report(documents, config, benchmark_data, taus: list[float], output: str, write_clean: str | None) -> dict:
    """Check every (text, origin) of ``documents``; write the flagged list, the per-problem table and
    the cleaned copy; return the summary (with the sweep when ``taus``)."""
    import contextlib
    import itertools

    from phi_hpc.fileio import atomic_write
    from phi_hpc.progress import progress_bar
    from phi_hpc.quality.benchmarks import load_benchmarks
    from phi_hpc.quality.decontaminate import Decontaminator, default_cache_dir

    decontaminator = Decontaminator(load_benchmarks(benchmark_data), loosest(config, taus), default_cache_dir())
    main_tau = config.ast_threshold
    tally = ContaminationTally(sorted({main_tau, *taus}, reverse=True), main_tau)
    by_method: dict[str, int] = {}
    count = clean = 0
    with contextlib.ExitStack() as stack:
        report = stack.enter_context(atomic_write(output))
        cleaned = stack.enter_context(atomic_write(write_clean)) if write_clean else None
        progress = stack.enter_context(progress_bar())
        task = progress.add_task("decontaminate", total=None)
        while batch := list(itertools.islice(documents, 256)):
            texts = [t for t, _ in batch]
            embedded = decontaminator.embedding_findings(texts) if decontaminator.has_embedding else [None] * len(batch)
            for (text, origin), extra in zip(batch, embedded):
                verdict = check_document(decontaminator, text, origin, extra)
                tally.add(verdict)
                finding = verdict.flagged_at(main_tau)
                if finding is None:
                    clean += 1
                    if cleaned is not None:
                        cleaned.write(json.dumps({"text": text, "origin": origin}) + "\n")
                    continue
                by_method[finding.method] = by_method.get(finding.method, 0) + 1
                report.write(
                    json.dumps(
                        {
                            "document": origin,
                            "problem": finding.problem,
                            "method": finding.method,
                            "score": finding.score,
                            "reason": finding.reason(),
                        },
                        sort_keys=True,
                    )
                    + "\n"
                )
            count += len(batch)
            progress.advance(task, len(batch))
    table = tally.table(benchmark_problem_names(decontaminator))
    write_table(f"{output}.problems.jsonl", table)
    summary = {
        "report": output,
        "problems_table": f"{output}.problems.jsonl",
        "documents": count,
        "flagged": count - clean,
        "by_method": by_method,
        "problems_contaminated": sum(r["contaminated"] for r in table),
        "benchmark_files": list(decontaminator.benchmarks.files),
        "config": dataclasses.asdict(config),
        "prefilter_containment": config.prefilter_containment,
        "clean_written": clean if write_clean else None,
        "clean_output": write_clean,
    }
    if taus:
        summary["sweep"] = tally.sweep(count)
    return summary
