"""Errors the user can cause. The CLI prints the message as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: an unknown space or study, a malformed space file, a bad storage URL, ..."""
