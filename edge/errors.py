"""Errors a user can cause. The CLIs turn them into one line and an exit code, never a traceback.

Exit codes (documented in the README, shared by fer-train, fer-convert and fer-edge):
  0  success
  1  unexpected internal error (a bug: traceback printed)
  2  usage error (click's own: bad flag or value)
  3  bad input data or file (DataError, ModelError, ContractError, ConfigError)
  4  a source (camera, stream, file) could not be opened or was lost for good (SourceError)
  5  the conversion gate failed: accuracy did not hold (GateError)
  6  a requested device or display is not available (DeviceError: no display, no Edge TPU compiler)
"""
from __future__ import annotations


class FerError(Exception):
    """Base of every error a user can cause; `exit_code` is what the CLI returns."""

    exit_code = 3


class DataError(FerError):
    """A data file, row or image is malformed or missing (the message names it)."""


class ContractError(FerError):
    """A model, card or input breaks the model contract."""


class ModelError(FerError):
    """A model file is missing, corrupt or of the wrong kind."""


class ConfigError(FerError):
    """A configuration file or value is wrong."""


class SourceError(FerError):
    """A video source cannot be opened, or was lost and could not be reopened."""

    exit_code = 4


class GateError(FerError):
    """The converted model lost too much accuracy against the float model."""

    exit_code = 5


class DeviceError(FerError):
    """A device the user asked for (display, Edge TPU, compiler) is not there."""

    exit_code = 6
