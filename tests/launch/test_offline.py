"""What `submit` hands jobs instead of names they would have to download (phi_hpc.launch.offline)."""

from __future__ import annotations

import shutil

from phi_hpc.launch.offline import localize_eval_args, localize_tokenizer


def test_eval_args_get_cached_mbpp_and_a_local_tokenizer(tmp_path, monkeypatch, mbpp_path, codegen_tokenizer):
    cache = tmp_path / "xdg"
    (cache / "phi-hpc" / "mbpp").mkdir(parents=True)
    cached = cache / "phi-hpc" / "mbpp" / "mbpp.jsonl"
    shutil.copyfile(mbpp_path, cached)  # already fetched: found by its pinned sha256, no network needed
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("PHI_HPC_CACHE_DIR", raising=False)  # it would come first (phi_hpc.paths.cache_root)
    monkeypatch.setenv("PHI_HPC_MBPP_URL", "http://127.0.0.1:9/unreachable")

    assert localize_eval_args(["--task", "humaneval"]) == ["--task", "humaneval"]
    assert localize_eval_args(["--task=humaneval,mbpp", "--limit", "2"]) == [
        "--task=humaneval,mbpp",
        "--limit",
        "2",
        "--data",
        f"mbpp={cached}",
    ]
    # data the user gave is kept, whichever way it was given
    assert localize_eval_args(["--task", "mbpp", "--data", "mine.jsonl"]) == ["--task", "mbpp", "--data", "mine.jsonl"]
    assert localize_eval_args(["--task", "mbpp,humaneval", "--data", "mbpp=m.jsonl"])[-1] == "mbpp=m.jsonl"

    folder = codegen_tokenizer.parent
    assert localize_tokenizer(["x", "--tokenizer", str(folder)]) == ["x", "--tokenizer", str(codegen_tokenizer)]
    assert localize_tokenizer([f"--tokenizer={folder}"]) == [f"--tokenizer={codegen_tokenizer}"]
