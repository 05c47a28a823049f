"""Command-line trainers: python -m train.gaussian (and, later, train.dem, train.score)."""
