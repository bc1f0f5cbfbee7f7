"""Tests of the sandboxed evaluation harness (phi_hpc.eval: tasks, sandbox, scoring, CLI)."""
