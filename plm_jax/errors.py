"""Errors that describe bad user input (config, files, checkpoints, flags): the CLI prints them as one line and
exits with status 2. Everything else, a bug inside the code among them, keeps its traceback.

Set PLM_DEBUG=1 to get the traceback of a user error as well.
"""


class UserError(ValueError):
    """The user's input is wrong: the message names the key, file, line or value, and what would be right.

    A ValueError, so that callers and tests that expect one still catch it."""


class DataUnavailableError(RuntimeError):
    """A dataset could not be fetched or prepared (offline, a missing package, a failed download)."""


USER_ERRORS: tuple[type[Exception], ...] = (
    UserError,  # includes CheckpointMismatchError and config validation
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    UnicodeError,
    DataUnavailableError,
)
