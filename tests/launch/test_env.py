"""Pure pieces of the launcher: node lists, ports, every launcher's variables (phi_hpc.distenv), time limits,
profiles."""

from __future__ import annotations

import pytest
from submitit.slurm.slurm import _parse_node_list as submitit_parse_node_list

from phi_hpc.distenv import DistEnv, detect, expand_nodelist, port_for_job
from phi_hpc.errors import PhiError, UsageError
from phi_hpc.launch.profiles import load_profile, time_minutes

# Forms seen in SLURM_JOB_NODELIST on real clusters.
NODELISTS = [
    ("vm", ["vm"]),
    ("node[1-2]", ["node1", "node2"]),
    ("gpu[001-003]", ["gpu001", "gpu002", "gpu003"]),
    ("node[001-003,007]", ["node001", "node002", "node003", "node007"]),
    ("gpu[008-010,015],login2", ["gpu008", "gpu009", "gpu010", "gpu015", "login2"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("r[1-2]n[3-4]", ["r1n3", "r1n4", "r2n3", "r2n4"]),
    ("a1,b[2-3]", ["a1", "b2", "b3"]),
    ("a1,b[7],c[9-10]", ["a1", "b7", "c9", "c10"]),
    ("nid[00098-00101]", ["nid00098", "nid00099", "nid00100", "nid00101"]),
    ("gpu-a100-[01-02],cpu-[1-2]", ["gpu-a100-01", "gpu-a100-02", "cpu-1", "cpu-2"]),
    ("x-1,x-2", ["x-1", "x-2"]),
    ("node[9-11]-ib", ["node9-ib", "node10-ib", "node11-ib"]),
    ("jwb[0001,0129],jwc01n[001-002]", ["jwb0001", "jwb0129", "jwc01n001", "jwc01n002"]),
    ("frontier[00001-00002,09999]", ["frontier00001", "frontier00002", "frontier09999"]),
]


@pytest.mark.parametrize("nodelist, hosts", NODELISTS)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist, hosts", NODELISTS)
def test_parser_agrees_with_submitits(nodelist, hosts):
    """submitit's own parser is the independent peer: the first host is what both pick as MASTER_ADDR."""
    assert submitit_parse_node_list(nodelist) == expand_nodelist(nodelist)


@pytest.mark.parametrize("bad", ["gpu[1-", "gpu[3-1]", "gpu[a-b]", "gpu]1["])
def test_unparseable_nodelist_names_the_fix(bad):
    with pytest.raises(PhiError) as caught:
        expand_nodelist(bad)
    assert bad in caught.value.one_line() and "MASTER_ADDR" in caught.value.one_line()


def test_port_is_shared_by_tasks_and_differs_between_jobs():
    assert port_for_job("123456") == port_for_job(123456) == 20000 + 3456
    assert port_for_job("123456") != port_for_job("123457")
    assert all(20000 <= port_for_job(j) < 30000 for j in ("1", "99999999", "4242_7", ""))
    # elements of one array that run side by side must not share a rendezvous port
    assert len({port_for_job(f"4242_{i}") for i in range(8)}) == 8


SLURM_STEP = {
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_ID": "777",
    "SLURM_JOB_NODELIST": "node[1-2]",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_RESTART_COUNT": "2",
}


def fields(env: DistEnv) -> tuple:
    return (env.rank, env.local_rank, env.world_size, env.node_rank, env.master_addr, env.master_port, env.source)


@pytest.mark.parametrize(
    "environ, expected",
    [
        # a srun task of a two-node job: the second task of node2
        (SLURM_STEP, (3, 1, 4, 1, "node1", 20777, "slurm")),
        # the same, with a user-chosen rendezvous
        ({**SLURM_STEP, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}, (3, 1, 4, 1, "10.0.0.1", 29400, "slurm")),
        # a step on part of the job's nodes rendezvous on the step's first node
        ({**SLURM_STEP, "SLURM_STEP_NODELIST": "node2"}, (3, 1, 4, 1, "node2", 20777, "slurm")),
        # torchrun (one agent per node, started by srun): its variables win over Slurm's
        (
            {
                **SLURM_STEP,
                "RANK": "5",
                "WORLD_SIZE": "8",
                "LOCAL_RANK": "1",
                "GROUP_RANK": "1",
                "MASTER_ADDR": "node1",
                "MASTER_PORT": "29500",
                "TORCHELASTIC_RUN_ID": "x",
            },
            (5, 1, 8, 1, "node1", 29500, "torchrun"),
        ),
        # a wrapper exported the ranks only: the rendezvous comes from the Slurm job
        (
            {
                "RANK": "1",
                "WORLD_SIZE": "2",
                "SLURM_PROCID": "1",
                "SLURM_LOCALID": "1",
                "SLURM_JOB_ID": "77",
                "SLURM_JOB_NODELIST": "node[3-4]",
            },
            (1, 1, 2, 0, "node3", 20077, "env"),
        ),
        # a user's own variables, no scheduler
        (
            {"RANK": "0", "WORLD_SIZE": "2", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "12345"},
            (0, 0, 2, 0, "127.0.0.1", 12345, "env"),
        ),
        # submitit's local executor
        (
            {
                "SUBMITIT_EXECUTOR": "local",
                "SUBMITIT_LOCAL_GLOBALID": "1",
                "SUBMITIT_LOCAL_LOCALID": "1",
                "SUBMITIT_LOCAL_NTASKS": "2",
                "SUBMITIT_LOCAL_JOB_ID": "31337",
                "SLURM_PROCID": "0",
                "SLURM_STEP_ID": "0",
                "SLURM_NTASKS": "1",
            },
            (1, 1, 2, 0, "127.0.0.1", 21337, "local"),
        ),
        # a multi-node batch script is one process, not rank 0 of 4 (it would wait for the others forever)
        (
            {**SLURM_STEP, "SLURM_PROCID": "0", "SLURM_STEP_ID": "batch", "MASTER_PORT": "1"},
            (0, 0, 1, 0, "127.0.0.1", 1, "single"),
        ),
    ],
)
def test_every_launcher_gives_the_same_answers(environ, expected):
    assert fields(detect(environ)) == expected


def test_exported_variables_are_torchs():
    env = detect(SLURM_STEP)
    assert env.torch_variables() == {
        "RANK": "3",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "4",
        "NODE_RANK": "1",
        "MASTER_ADDR": "node1",
        "MASTER_PORT": "20777",
    }
    assert env.restarts == 2 and env.job_id == "777" and not env.is_main
    # what the task wrapper exports is read back unchanged by the trainer in the same process
    exported = dict(SLURM_STEP)
    env.export(exported)
    assert fields(detect(exported))[:6] == fields(env)[:6]


def test_array_element_logs_under_its_array_index_and_rendezvous_on_its_own_id():
    environ = {
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "1",
        "SLURM_STEP_ID": "0",
        "SLURM_JOB_ID": "91",
        "SLURM_JOB_NODELIST": "n1",
        "SLURM_ARRAY_JOB_ID": "88",
        "SLURM_ARRAY_TASK_ID": "3",
    }
    env = detect(environ)
    assert env.job_id == "88_3" and env.master_port == port_for_job("91")


@pytest.mark.parametrize(
    "environ",
    [
        {"RANK": "4", "WORLD_SIZE": "4"},
        {"RANK": "-1", "WORLD_SIZE": "4"},
        {"RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": "70000"},
        {"RANK": "zero", "WORLD_SIZE": "1"},
        {**SLURM_STEP, "SLURM_PROCID": ""},
    ],
)
def test_impossible_values_fail_with_the_fix(environ):
    with pytest.raises(PhiError) as caught:
        detect(environ)
    assert "RANK" in caught.value.one_line() or "MASTER_PORT" in caught.value.one_line()


@pytest.mark.parametrize(
    "text, minutes",
    [("30", 30), ("00:30:00", 30), ("1:30", 2), ("2-00:00:00", 2880), ("1-12", 2160), ("0-00:00:30", 1)],
)
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
