"""Shared test helpers, imported as ``tests.helpers.<module>`` (pytest runs in
importlib mode with the repository root on ``sys.path``; see pyproject.toml):

- ``checkpoints``: word-level tokenizer and text, tiny checkpoints on disk
- ``autoround``: tiny MoE, char tokenizer and calibration ids for AutoRound runs
- ``llmcompressor``: tiny checkpoints, schemes and ``oneshot`` for llm-compressor
- ``routers``: randomised routers and the exact-decision check of ``route()``
- ``objective``: router specs and prepared pairs of the objective tests
- ``allocate``: ``vsraq allocate`` runs, their recipe and layer config via the hosts
- ``bench_cells``: synthetic benchmark cells for the report tests
- ``fixtures``: the host tests' fixtures (imported by the conftests that use them)
"""
