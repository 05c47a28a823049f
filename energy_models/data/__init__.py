"""Data sources: MNIST through tensorflow-datasets, and 28x28 patches cut from photographs."""
