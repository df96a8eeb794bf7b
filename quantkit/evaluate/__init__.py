"""Evaluation: pure metrics (top-k, agreement, SQNR, latency statistics) and the compare loop."""
