"""What a person reads: Keras's progress output suited to where stdout goes."""

import sys


def progress_verbosity(stream=None):
    """Keras `fit(verbose=...)`: 1 (a live progress bar) on a terminal, 2 (one plain line per epoch)
    otherwise. The bar redraws itself with ANSI colours, carriage returns and backspaces, which fill a log
    file with unreadable bytes."""
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # Replaced or closed streams.
        return 2
