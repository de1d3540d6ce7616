"""The one exception type that reaches users as a one-line message.

Library code raises :class:`SeqVAEError` for bad input (a missing file, a wrong config key, a
corrupt checkpoint); the CLI prints its message on one line and exits non-zero without a
traceback. Programming errors keep their ordinary exception types and tracebacks.
"""


class SeqVAEError(Exception):
    """A problem with the user's input, stated in one line that names the file or key."""
