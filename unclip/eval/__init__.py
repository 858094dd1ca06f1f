"""Evaluation: distances between sample sets and, later, the metrics of the evaluation harness."""
