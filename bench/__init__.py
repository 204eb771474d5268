"""Benchmarks: planner cost on generated big hosts, executor overhead against bare syscalls (make bench)."""
