"""Errors raised for bad user input (flags, files, config fields): one line, naming the flag, field or file:line."""

from __future__ import annotations

from .flagtable import flags_setting


class InputError(ValueError):
    """Bad command-line flag or input file. The message is one line and names the culprit."""


class ConfigError(InputError):
    """A configuration field with an invalid value; `field` is its dotted name (e.g. "beam.wavelength")."""

    def __init__(self, field: str, detail: str, flags: bool = False, files: dict[str, str] | None = None) -> None:
        self.field = field
        self.detail = detail
        names = flags_setting(field) if flags else None
        where = f"flag {names}" if names else f"config field {field}"
        if files and files.get(field):
            where = f"{files[field]} ({where})"
        super().__init__(f"{where}: {detail}")
