"""Errors a user can fix. The CLI prints their message on one line and exits with status 2.

Anything else is a bug in difforge and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: a bad path, file, flag value or configuration."""


class DataError(UserError):
    """The image folder cannot be used as given (missing, empty, corrupt files, ...)."""


class ConfigError(UserError):
    """A setting has a value that is not allowed; the message names the field and the choices."""


class CheckpointError(UserError):
    """A model or training-state file is missing, corrupt, unsafe or does not fit."""
