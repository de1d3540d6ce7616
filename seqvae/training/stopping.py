"""When a training stops before its last epoch: the budgets (``train.max_steps``,
``train.max_minutes``) and the signals SIGINT and SIGTERM, after which a resumable checkpoint of
the step reached is saved. Under torchrun the ranks agree on every stop request at each step, so
that all stop after the same one whichever received the signal."""

from __future__ import annotations

import contextlib
import signal
import threading


class ValidationInterrupted(Exception):
    """Raised by the signal handler inside a validation, which the resumed run does again."""


class Stops:
    """The stop requests of a training: a signal received, the budgets, and (under torchrun) what
    the ranks agreed on at the last step."""

    def __init__(self, train_config, *, launched: bool) -> None:
        self.config, self.launched = train_config, launched
        self.signal: str | None = None  # SIGINT or SIGTERM received: save and stop after this step
        self.validating = False  # in a validation that a signal stops at once (one process)
        self.agreed_signal: str | None = None
        self.agreed_out_of_time = False

    def pending_signal(self) -> str | None:
        """The signal to stop at (under torchrun: the one the ranks agreed on at the last step)."""
        return self.agreed_signal if self.launched else self.signal

    def over_minutes(self, seconds: float) -> bool:
        """This process's own view of train.max_minutes, ``seconds`` of training spent."""
        limit = self.config.max_minutes
        return bool(limit) and seconds >= 60.0 * limit

    def out_of_time(self, seconds: float) -> bool:
        """train.max_minutes is spent (under torchrun: as the ranks agreed at the last step)."""
        return self.agreed_out_of_time if self.launched else self.over_minutes(seconds)

    def budget_spent(self, step: int, seconds: float) -> bool:
        """train.max_steps or train.max_minutes ends the run before this step."""
        return bool(self.config.max_steps and step >= self.config.max_steps) or self.out_of_time(seconds)

    def flags(self, seconds: float) -> tuple[float, float, float]:
        """This rank's requests, summed over the ranks with a step's figures."""
        return float(self.signal == "SIGINT"), float(self.signal == "SIGTERM"), float(self.over_minutes(seconds))

    def agree(self, summed: tuple[float, ...]) -> None:
        """Take the requests the ranks summed with a step's figures."""
        if not summed:
            return
        interrupted, terminated, late = summed
        if interrupted or terminated:
            self.agreed_signal = "SIGINT" if interrupted else "SIGTERM"
        self.agreed_out_of_time = self.agreed_out_of_time or late > 0


@contextlib.contextmanager
def stop_on_signals(stops: Stops):
    """SIGINT / SIGTERM set ``stops.signal`` (the loop saves and stops after the current step)
    and restore the previous handlers, so that a second signal acts at once. In a validation of
    one process the signal stops it at once: the run saves the step it had reached and its
    resumed run validates again.

    Under torchrun a rank keeps its handler: Ctrl-C reaches it from the terminal and again from
    torchrun, which passes the signal on to its workers (and kills them 30 s later if they have
    not stopped), and the second must not cut the save short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in signals}

    def handler(number, frame):
        if stops.signal is None:
            stops.signal = signal.Signals(number).name
        if not stops.launched:
            for other, action in previous.items():
                signal.signal(other, action)
        if stops.validating:  # a validation may run for minutes: stop it now (see validation.validate)
            stops.validating = False
            raise ValidationInterrupted

    for number in signals:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)
