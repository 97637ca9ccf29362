"""Errors a user can fix: the command-line tools print their message, never a traceback."""


class UserError(Exception):
    """A problem with the user's input (data, files, options); the message says what and how to fix it."""


class DataError(UserError):
    """A dataset folder or image that cannot be used as given."""


class CheckpointError(UserError):
    """A checkpoint or weights file that cannot be loaded."""
