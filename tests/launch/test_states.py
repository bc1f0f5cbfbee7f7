"""Job states without a cluster: array summaries, and the run's own records when Slurm no longer knows a job."""

from __future__ import annotations

import pytest

from phi_hpc.launch.jobs import JobState, recorded_state, slurm_job_state, summarize


def elements(*states: str) -> list[JobState]:
    return [JobState(f"100_{i}", state) for i, state in enumerate(states)]


@pytest.mark.parametrize(
    "bad", ["OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "TIMEOUT", "FAILED"]
)
def test_an_array_with_one_failed_element_is_failed_and_names_it(bad):
    summary = summarize(elements("COMPLETED", "COMPLETED", bad, "COMPLETED"))
    assert summary.state == "FAILED" and summary.finished
    assert summary.reason.startswith(f"element 2 {bad}") and "3 COMPLETED" in summary.reason


def test_the_worst_failure_is_named_first():
    summary = summarize(elements("FAILED", "OUT_OF_MEMORY", "COMPLETED"))
    assert summary.reason.startswith("element 1 OUT_OF_MEMORY, element 0 FAILED")


def test_an_array_still_running_is_running_but_already_names_its_failures():
    summary = summarize(elements("OUT_OF_MEMORY", "RUNNING", "PENDING"))
    assert summary.state == "RUNNING" and not summary.finished and "element 0 OUT_OF_MEMORY" in summary.reason


def test_all_completed_is_completed_and_cancelled_wins_over_completed():
    assert summarize(elements("COMPLETED", "COMPLETED")).state == "COMPLETED"
    assert summarize(elements("COMPLETED", "CANCELLED")).state == "CANCELLED"


def end(job_id: str, status: str, detail: str = "") -> dict:
    return {"event": "end", "job": "train", "job_id": job_id, "status": status, "detail": detail, "time": 2.0}


def start(job_id: str) -> dict:
    return {"event": "start", "job": "train", "job_id": job_id, "time": 1.0}


def test_a_purged_job_is_answered_from_its_records():
    attempts = [start("7"), end("7", "requeued"), start("7"), end("7", "completed")]
    state = slurm_job_state("7", [], attempts, queue_answered=True)
    assert state.state == "COMPLETED" and state.finished
    failed = slurm_job_state("8", [], [start("8"), end("8", "failed", "not requeued: scontrol ...")], True)
    assert failed.state == "FAILED" and failed.reason.startswith("not requeued")


def test_a_purged_job_without_an_outcome_is_lost_not_unknown_forever():
    state = slurm_job_state("9", [], [start("9")], queue_answered=True)
    assert state.state == "LOST" and state.finished and "killed" in state.reason
    assert slurm_job_state("9", [], [start("9")], queue_answered=False).state == "UNKNOWN"  # squeue did not answer


def test_a_requeued_job_in_the_queue_is_what_slurm_says():
    attempts = [start("7"), end("7", "requeued")]
    assert slurm_job_state("7", [JobState("7", "PENDING")], attempts, True).state == "PENDING"
    assert recorded_state("7", attempts) is None  # requeued is not an outcome


def test_a_purged_array_is_summarized_from_its_elements_records():
    attempts = [start("5_0"), end("5_0", "completed"), start("5_1"), end("5_1", "failed", "exit 1")]
    state = slurm_job_state("5", [], attempts, True, array_size=2)
    assert state.state == "FAILED" and "element 1 FAILED" in state.reason
    assert recorded_state("5", attempts[:2], array_size=2) is None  # element 1 has no outcome yet


def test_a_purged_array_names_the_element_that_never_recorded_an_outcome():
    attempts = [start("6_0"), end("6_0", "completed"), start("6_1"), start("6_2"), end("6_2", "completed")]
    state = slurm_job_state("6", [], attempts, True, array_size=3)
    assert state.state == "FAILED" and state.reason.startswith("element 1 LOST")


def test_an_array_is_not_finished_by_the_one_element_accounting_lists_so_far():
    """slurmdbd writes split elements' records late: for a while sacct lists element 2 (the array's own job
    record) COMPLETED and nothing of elements 0 and 1, which squeue no longer lists either. That is not a
    completed array: the elements' own records answer, and without them they are LOST, not COMPLETED."""
    listed = [JobState("4_2", "COMPLETED")]
    ends = [start("4_0"), end("4_0", "completed"), start("4_1"), end("4_1", "failed", "exit 1"), start("4_2")]
    state = slurm_job_state("4", listed, ends, True, array_size=3)
    assert state.state == "FAILED" and state.reason == "element 1 FAILED (2 COMPLETED, 1 FAILED)"
    recorded = [start("4_0"), end("4_0", "completed"), start("4_1"), end("4_1", "completed")]
    assert slurm_job_state("4", listed, recorded, True, array_size=3).reason == "3 COMPLETED"
    unrecorded = slurm_job_state("4", listed, [start("4_0")], True, array_size=3)
    assert unrecorded.state == "FAILED" and unrecorded.reason.startswith("element 0 LOST, element 1 LOST")
    unanswered = slurm_job_state("4", listed, [], False, array_size=3)
    assert unanswered.state == "UNKNOWN" and not unanswered.finished


def test_rows_that_speak_for_several_elements_cover_them():
    pending = slurm_job_state("3", [JobState("3_0", "RUNNING"), JobState("3_[1-2%2]", "PENDING")], [], True, 3)
    assert pending.state == "RUNNING" and pending.reason == "2 PENDING, 1 RUNNING"
    unsplit = slurm_job_state("3", [JobState("3", "PENDING")], [], True, 3)  # sacct before Slurm split it
    assert unsplit.state == "PENDING" and unsplit.reason == "3 PENDING"
    cancelled = slurm_job_state("3", [JobState("3_0", "COMPLETED"), JobState("3_[1,2]", "CANCELLED")], [], True, 3)
    assert cancelled.state == "CANCELLED" and cancelled.reason == "2 CANCELLED, 1 COMPLETED"
