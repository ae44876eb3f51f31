"""Fuzzers: Hypothesis-mutated archives through validate and through open + read."""
