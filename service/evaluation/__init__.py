"""Retrieval and answer evaluation (``python -m service eval``) and the benchmark.

Data lives in ``eval/`` (``questions.jsonl``); results are written to ``eval/results/``.
"""
