"""energy_models: unnormalised (energy-based) models of images in TensorFlow/Keras.

Exercise 1 fits a zero-mean Gaussian with a 2-D grid precision to MNIST by exact maximum likelihood,
noise-contrastive estimation, conditional NCE and score matching. Exercise 2 fits a constrained Gaussian
and a two-layer deep energy model to natural-image patches.
"""

__version__ = "0.1.0"
