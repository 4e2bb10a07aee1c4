"""Offload apps and tasks that exist only for the benchmarks."""
