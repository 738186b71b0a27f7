"""The project's user-facing error: a problem with the input or environment that the user can fix.

The CLI prints these as one line and exits 2; the servers answer them with a 4xx.
"""


class SmartEnergyError(ValueError):
    """Base of every error whose message is meant for the user."""
