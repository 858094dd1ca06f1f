"""Evaluation: distances between sample sets (distances.py) and distribution metrics on features (features.py)."""
