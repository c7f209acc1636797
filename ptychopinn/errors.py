"""Exceptions the user sees. Each message is one line naming the file, key and expectation."""
from __future__ import annotations


class PtychoPINNError(Exception):
    """Base class: the CLI prints the message on one line and exits with code 2."""


class DataError(PtychoPINNError, ValueError):
    """A scan file (NPZ/HDF5) or in-memory scan violates the data contract."""


class ModelFormatError(PtychoPINNError, ValueError):
    """A model directory, checkpoint or legacy bundle is missing, corrupt or unsafe."""


class ConfigError(PtychoPINNError, ValueError):
    """A configuration file or flag combination is invalid."""
