"""Benchmark harness: measures call paths side by side and writes results under results/."""
