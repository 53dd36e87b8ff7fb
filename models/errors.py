"""Exceptions raised by the ``models`` package.

Every bad input (unreadable file, wrong architecture, inconsistent configuration) is reported with one of
these, carrying a message that names the problem, instead of a stack trace from deep inside PyTorch.
"""


class ModelError(ValueError):
    """Invalid model configuration or input data."""


class CheckpointError(ModelError):
    """A checkpoint file cannot be read or does not match the model it is loaded into."""
