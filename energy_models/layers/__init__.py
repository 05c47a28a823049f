"""Keras layers: the grid precision energy and the deep energy model's energy."""

from energy_models.layers.dem_energy import DEMEnergy
from energy_models.layers.grid_precision import GridPrecision

__all__ = ["DEMEnergy", "GridPrecision"]
