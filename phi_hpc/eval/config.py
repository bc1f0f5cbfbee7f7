"""What decides an ``eval run``: one frozen, self-validating config (fingerprinted for shard reuse).

Its own module so that :mod:`phi_hpc.eval.model_source` (which model and tokenizer it names) and
:mod:`phi_hpc.eval.run` (generate and score) both read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phi_hpc.errors import UsageError
from phi_hpc.eval.custom_tasks import is_custom_task
from phi_hpc.eval.tasks import TASKS as KNOWN_TASKS


@dataclass(frozen=True)
class EvalRunConfig:
    """Everything that decides what ``eval run`` produces (it is fingerprinted for shard reuse)."""

    output_dir: str
    checkpoint: str | None = None  # ours: HF folder, step folder, run folder, checkpoints/ or latest
    hf_model: str | None = None  # a transformers PhiForCausalLM folder
    tasks: tuple[str, ...] = ("humaneval",)
    data: dict[str, str] = field(default_factory=dict)  # task -> dataset path (default: tasks' own lookup)
    limit: int | None = None  # first N problems of each task
    n: int = 1  # samples per problem
    greedy: bool = True
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 512
    batch_size: int = 8
    seed: int = 1234
    tokenizer: str | None = None
    workers: int = 2  # sandbox processes
    isolation: str | None = None  # sandbox level; None: bubblewrap, required
    ks: tuple[int, ...] = (1, 10, 100)
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    merge_timeout_s: float = 6 * 3600.0  # how long rank 0 waits for the other ranks' shards

    def __post_init__(self) -> None:
        if bool(self.checkpoint) == bool(self.hf_model):
            raise UsageError(
                "give exactly one of --checkpoint and --hf-model",
                "--checkpoint RUN/checkpoints/latest or --hf-model DIR",
            )
        unknown = [t for t in self.tasks if t not in KNOWN_TASKS and not is_custom_task(t)]
        if unknown or not self.tasks:
            raise UsageError(
                f"--task {','.join(self.tasks) or '(empty)'}: unknown task {unknown[0] if unknown else ''}",
                f"choose from {', '.join(KNOWN_TASKS)}, or give a problem file (.jsonl)",
            )
        for task in self.data:
            if task not in self.tasks:
                raise UsageError(f"--data {task}=...: task {task} is not among --task {','.join(self.tasks)}")
        if self.n < 1:
            raise UsageError(f"--n {self.n}: must be at least 1")
        if self.greedy and self.n > 1:
            raise UsageError(
                f"--greedy with --n {self.n} would give {self.n} identical samples",
                "drop --greedy (sampling uses --temperature) or use --n 1",
            )
        if not self.greedy and self.temperature <= 0:
            raise UsageError(f"--temperature {self.temperature}: must be > 0 when sampling", "or pass --greedy")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit {self.limit}: must be at least 1")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise UsageError("--max-new-tokens and --batch-size must be at least 1")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UsageError(f"--dtype {self.dtype}: choose auto, float32, bfloat16 or float16")
