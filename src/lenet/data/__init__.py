"""Data: IDX files, the datasets' constants, where their files are found (or downloaded),
in-memory splits, batches on the device, and user images prepared like the datasets.

The lowest room above lenet's base (errors, atomic writes): nothing here imports models,
training or runs.
"""
