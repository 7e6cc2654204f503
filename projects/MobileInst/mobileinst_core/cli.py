# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""What the command-line entry points (``python -m mobileinst_runtime``, ``demo.py``,
``tools/export.py``) share: flag types checked where argparse reads them, and SIGTERM
turned into an exception so that their cleanup (``finally``) runs as on Ctrl-C."""
import argparse
import contextlib
import signal
import sys

__all__ = ["int_at_least", "sigterm_exits"]


def int_at_least(minimum: int, note: str = ""):
    """An argparse ``type``: an int >= ``minimum``; else argparse's usage error (exit
    status 2) naming the flag, the value and what is expected (``note`` added)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected an int >= {minimum}{note}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}; expected an int >= {minimum}{note}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM (:func:`sigterm_exits`): exit status 143
    (128 + SIGTERM) once ``finally`` blocks have cleaned up."""


@contextlib.contextmanager
def sigterm_exits():
    """Within the block, SIGTERM raises :class:`Terminated` (a ``SystemExit``) in the main
    thread, so the cleanup a KeyboardInterrupt gets (temporary files removed, earlier
    outputs left as they were) runs for ``kill`` too. The earlier handler is restored."""

    def handler(signum, frame):
        print("Terminated (SIGTERM): stopping; nothing half-written is kept", file=sys.stderr)
        raise Terminated(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
