"""`make bench`: Offload's figures side by side with baselines measured in the same run.

Every module here that defines `run() -> list[dict]` is a benchmark; `python -m benchmarks` runs
them all and prints one table. A row is {figure, value, baseline, ratio, target} with optional
unit, passed and note.
"""
