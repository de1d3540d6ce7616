"""The one exception type that reaches users as a one-line message.

Library code raises :class:`SeqVAEError` for bad input (a missing file, a wrong config key, a
corrupt checkpoint); the CLI prints its message on one line and exits non-zero without a
traceback. Programming errors keep their ordinary exception types and tracebacks.
"""


class SeqVAEError(Exception):
    """A problem with the user's input, stated in one line that names the file or key."""

    exit_code = 2
    """The status the command exits with."""


class TrainingInterrupted(SeqVAEError):
    """Training stopped by SIGINT or SIGTERM after saving a resumable checkpoint; the message says
    how to resume. The command exits with 130, as for an interrupt."""

    exit_code = 130
