"""Data: raw code in, Megatron-compatible token memmaps out (see ``phi-hpc prepare``)."""
