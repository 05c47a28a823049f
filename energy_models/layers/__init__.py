"""Keras layers: the grid precision energy (and, later, the deep energy model's energy)."""

from energy_models.layers.grid_precision import GridPrecision

__all__ = ["GridPrecision"]
