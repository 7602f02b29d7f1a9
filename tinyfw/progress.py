"""Progress on the terminal during training: a line rewritten in place (or plain lines when the
output is not a terminal), and a Ctrl-C that asks to stop after the current step."""
import math
import signal
import threading
import time


class Progress:
    """Progress reporting: one line rewritten in place on a terminal, plain lines otherwise."""

    def __init__(self, stream, total_steps, every, tty=None):
        self.stream = stream
        self.total = total_steps
        self.every = every
        self.tty = stream.isatty() if tty is None and hasattr(stream, "isatty") else bool(tty)
        self._last_draw = 0.0
        self._width = 0

    def _clear(self):
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0

    def message(self, text):
        """A line that stays (evaluation results, notes)."""
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, step, loss, lr, tokens_per_s, eta_s, force=False):
        line = (f"step {step:>{len(str(self.total))}}/{self.total}  loss {loss:.4f}  "
                f"lr {lr:.2e}  {tokens_per_s:,.0f} tok/s  ETA {format_seconds(eta_s)}")
        if self.tty:
            now = time.monotonic()
            if force or now - self._last_draw > 0.1 or step == self.total:
                self.stream.write("\r" + line.ljust(self._width))
                self._width = len(line)
                self.stream.flush()
                self._last_draw = now
        elif force or step % self.every == 0 or step == self.total:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self):
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
            self.stream.flush()


def format_seconds(s):
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class StopRequest:
    """Turns the first Ctrl-C into a request to stop after the current step (so the checkpoint
    holds a complete step); a second Ctrl-C interrupts at once."""

    def __init__(self, progress):
        self.requested = False
        self.progress = progress
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            if self._previous is signal.default_int_handler:
                signal.signal(signal.SIGINT, self._handle)
            else:
                self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.progress.message("interrupt: stopping after this step and writing a checkpoint "
                              "(Ctrl-C again to abort without saving)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class NullStream:
    """A stream that discards everything (``quiet``)."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


__all__ = ["Progress", "format_seconds", "StopRequest", "NullStream"]
