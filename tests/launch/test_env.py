"""Pure pieces of the launcher: node lists, ports, task variables, time limits, profiles."""

from __future__ import annotations

import pytest

from phi_hpc.errors import UsageError
from phi_hpc.launch.env import expand_nodelist, port_for_job, slurm_task_env
from phi_hpc.launch.profiles import load_profile, time_minutes


@pytest.mark.parametrize("nodelist, hosts", [
    ("vm", ["vm"]),
    ("gpu[001-003]", ["gpu001", "gpu002", "gpu003"]),
    ("gpu[008-010,015],login2", ["gpu008", "gpu009", "gpu010", "gpu015", "login2"]),
    ("r[1-2]n[3-4]", ["r1n3", "r1n4", "r2n3", "r2n4"]),
    ("a1,b[7],c[9-10]", ["a1", "b7", "c9", "c10"]),
])
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_port_is_shared_by_tasks_and_differs_between_jobs():
    assert port_for_job("123456") == port_for_job("123456")
    assert port_for_job("123456") != port_for_job("123457")
    assert all(20000 <= port_for_job(j) < 30000 for j in ("1", "99999999", "4242_7"))


def test_task_env_of_a_two_node_job():
    environ = {"SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16", "SLURM_JOB_ID": "777",
               "SLURM_JOB_NODELIST": "gpu[041-042]", "SLURM_RESTART_COUNT": "2"}
    env = slurm_task_env(environ)
    assert env.torch_variables() == {"RANK": "9", "LOCAL_RANK": "1", "WORLD_SIZE": "16",
                                     "MASTER_ADDR": "gpu041", "MASTER_PORT": str(port_for_job("777"))}
    assert env.restarts == 2 and env.job_id == "777"


def test_array_element_logs_under_its_array_index():
    environ = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_ID": "91", "SLURM_JOB_NODELIST": "n1",
               "SLURM_ARRAY_JOB_ID": "88", "SLURM_ARRAY_TASK_ID": "3"}
    env = slurm_task_env(environ)
    assert env.job_id == "88_3" and env.master_port == port_for_job("91")


@pytest.mark.parametrize("text, minutes", [("30", 30), ("00:30:00", 30), ("1:30", 2), ("2-00:00:00", 2880),
                                           ("1-12", 2160), ("0-00:00:30", 1)])
def test_slurm_time_formats(text, minutes):
    assert time_minutes(text) == minutes


def test_profile_overrides_and_bad_values():
    profile = load_profile("a100x8", {"nodes": 4, "time": "2-00:00:00", "partition": "gpu", "qos": None})
    assert (profile.nodes, profile.time, profile.partition, profile.gpus_per_node) == (4, "2-00:00:00", "gpu", 8)
    assert profile.num_tasks == 32
    with pytest.raises(UsageError, match="time"):
        load_profile("a100x8", {"time": "two days"})
    with pytest.raises(UsageError, match="no such cluster profile"):
        load_profile("no-such-profile")
