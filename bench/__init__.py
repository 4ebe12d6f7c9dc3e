"""The one benchmark harness: every figure the issues ask for, beside a baseline from the same run.

Run it as ``.venv/bin/python bench/run.py [--quick] [--heavy] [--only NAME ...]``.
"""
