"""Command-line trainers: python -m train.gaussian, train.dem and train.score (each a thin front to energy_models.experiments)."""
