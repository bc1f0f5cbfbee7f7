"""Each rank fsyncs the checkpoint files it wrote itself (an fsync on one Lustre/NFS client does not flush
another client's pages), so every file is synced by its writer before rank 0 publishes the step."""

from __future__ import annotations

import os

from phi_hpc.train import checkpoint


def test_each_rank_syncs_its_own_files(tmp_path, monkeypatch):
    names = [
        "mp_rank_00_model_states.pt",
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "rng/rank-0.pt",
        "rng/rank-1.pt",
        "model.safetensors",
        "config.json",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    synced: dict[int, set[str]] = {}
    for rank in (0, 1):
        seen = synced.setdefault(rank, set())
        monkeypatch.setattr(os, "fsync", lambda fd, seen=seen: seen.add(os.readlink(f"/proc/self/fd/{fd}")))
        checkpoint._fsync_own_files(tmp_path, rank)
    mine = {
        rank: {str(tmp_path / n) for n in names_}
        for rank, names_ in {
            0: [
                "mp_rank_00_model_states.pt",
                "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                "rng/rank-0.pt",
                "model.safetensors",
                "config.json",
            ],
            1: [
                "zero_pp_rank_1_mp_rank_00_optim_states.pt",
                "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
                "rng/rank-1.pt",
            ],
        }.items()
    }
    assert synced == mine
    assert synced[0] | synced[1] == {str(tmp_path / n) for n in names}  # every file by exactly one writer
