"""Optimisers by name, with the cosine decay the stochastic estimators settle with."""

import keras


def make_optimizer(name, learning_rate, total_steps=None):
    """The Keras optimiser named `name` ("sgd", "rmsprop", "adam", or any name `keras.optimizers.get`
    knows), its learning rate on a cosine decay over `total_steps` when given.

    The decay (to 1% of the start) is what lets a stochastic iterate settle: with a constant rate, Adam
    keeps moving every parameter by ~lr per step around the optimum (or along the PD boundary).
    """
    if total_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, int(total_steps),
                                                                alpha=0.01)
    return keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate}})
