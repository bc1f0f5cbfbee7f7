"""Data quality, the heart of phi-1: what gets into the training set, and what must stay out.

* :mod:`.stages` -- the ``prepare`` filters (quality classifier or stored scores, decontamination),
  built lazily; :class:`.stages.PrepareFilters` is what the ``prepare`` command plugs into the pipeline.
* :mod:`.decontaminate` (+ :mod:`.benchmarks`, :mod:`.code_ast`) -- 13-gram overlap, rename-invariant
  AST similarity and optional embedding distance against HumanEval and MBPP.
* :mod:`.classifier` -- hashed-token or LM embeddings, a random forest, safe ``.npz`` model files.
* :mod:`.tokens` -- vectorized token hashing shared by both stages (they run on every document).
* :mod:`.label`, :mod:`.synth` (+ :mod:`.openai_client`, :mod:`.appendlog`) -- LLM annotation and
  synthetic textbooks/exercises through OpenAI-compatible endpoints, resumable.
* :mod:`.commands` -- ``quality label|train``, ``decontaminate``, ``synth textbook|exercises``.
"""
