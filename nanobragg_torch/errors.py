"""Errors raised for bad user input (flags, files): one line, naming the flag or file:line."""


class InputError(ValueError):
    """Bad command-line flag or input file. The message is one line and names the culprit."""
