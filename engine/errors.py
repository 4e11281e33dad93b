"""Errors a user can cause: reported as one line, never as a traceback."""


class UserError(Exception):
    """Bad input: a config, a file, an argument. The message says what, where and how to fix it."""
