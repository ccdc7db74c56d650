"""Benchmarks: ours against a baseline, interleaved in one run, reported as ratios with their spread.

    python -m benchmarks.run_all            # everything; JSON + Markdown in benchmarks/results/
    python -m benchmarks.run_all --smoke    # a few steps of each (what the CI test runs)
    python -m benchmarks.overhead           # one benchmark on its own (same flags)

Absolute times on a shared machine are noise; a ratio of two measurements taken side by side, round after
round, is not. Each round measures ours and the baseline back to back (in alternating order), and the
report gives the median, min and max of the per-round ratios.
"""
