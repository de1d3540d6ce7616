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

    def __init__(self, stopped: str, resume: str) -> None:
        super().__init__(f"{stopped}; continue with: {resume}")
        self.stopped = stopped
        """What stopped and where it was saved, without the command that continues it (a recipe
        that runs several trainings names its own)."""
        self.resume = resume

    def __reduce__(self):  # pickled whole (between processes), not from the joined message alone
        return type(self), (self.stopped, self.resume)


class ReportedByRankZero(SeqVAEError):
    """Under torchrun: an error that rank 0 met and reports; the other ranks raise this to stop
    with the same status, and the command prints nothing for it (one message, not one per rank)."""

    def __init__(self, message: str, exit_code: int = SeqVAEError.exit_code) -> None:
        super().__init__(message)
        self.exit_code = exit_code
