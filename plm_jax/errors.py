"""Exceptions that describe bad user input (config, files, checkpoints): the CLI prints them as one line.

Set PLM_DEBUG=1 to get the traceback as well.
"""



class DataUnavailableError(RuntimeError):
    """A dataset could not be fetched or prepared (offline, a missing package, a failed download)."""


USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # includes CheckpointMismatchError and config validation
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    UnicodeError,
    DataUnavailableError,
)
