"""Errors a user can fix by changing a setting, a file or a directory."""


class UserError(Exception):
    """Bad input: printed as one line, without a traceback, and the process exits non-zero."""
