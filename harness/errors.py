"""Errors a user can cause: the CLI prints them as one line and exits non-zero."""


class HarnessError(Exception):
    """A mistake in names, config or data that the user can fix; the message says how."""


class UnknownNameError(HarnessError):
    """A method, task, judge or engine name that no registry knows."""
