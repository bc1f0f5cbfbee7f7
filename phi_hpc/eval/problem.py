"""One benchmark problem: what the model sees, what runs, and the reference answer.

Its own module because both the built-in tasks (:mod:`phi_hpc.eval.tasks`) and problem files of
your own (:mod:`phi_hpc.eval.custom_tasks`) build problems, and ``tasks`` dispatches to
``custom_tasks``: the type they share must live below both.
"""

from __future__ import annotations

import dataclasses

from phi_hpc.eval.sandbox import Program


@dataclasses.dataclass(frozen=True)
class Problem:
    task_id: str  # "HumanEval/0", "Mbpp/11"
    prompt: str  # what a base model is given
    solution_prefix: str  # put before the completion (HumanEval: the prompt; MBPP: test imports)
    reference: str  # the dataset's own completion, which must pass
    tests: str  # runs after the solution, in a fresh namespace (HumanEval: defines check; the harness calls it)
    entry_point: str | None
    stop_sequences: tuple[str, ...]
    expose: tuple[str, ...] = ()  # MBPP: the reference's functions the tests call (see sandbox.Program)
    setup: str | None = None  # trusted code run before the tests; None: the prefix (it is the dataset's)

    def program(self, completion: str) -> Program:
        # The prefix (HumanEval's prompt, MBPP's test imports) is trusted: it also sets up the tests.
        setup = self.solution_prefix if self.setup is None else self.setup
        return Program(
            solution=self.solution_prefix + completion,
            tests=self.tests,
            setup=setup,
            entry_point=self.entry_point,
            expose=self.expose,
        )
