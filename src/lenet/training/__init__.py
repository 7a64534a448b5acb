"""One epoch, one evaluation and their state: the training configuration and recipes,
optimizers, the epoch loop, checkpoints, several processes.
"""
