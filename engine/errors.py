"""Errors the engine raises for problems a user can fix.

Every one carries a single-line message that names the problem; the CLI prints it and exits
with status 2, the app shows it in a message box. Anything else is a bug.
"""


class RiffwrightError(Exception):
    """A problem with the user's input, files or machine, explained in one line."""


class AudioError(RiffwrightError):
    """An audio file that cannot be read or written."""


class BundleError(RiffwrightError):
    """A model bundle or checkpoint that is missing, malformed or does not fit."""


class RequestError(RiffwrightError):
    """A generation request whose parameters do not make sense."""


class Cancelled(RiffwrightError):
    """The user cancelled a job; nothing was written."""
