"""Progress bars for long work: tqdm, redrawn at most every 5 s when stderr is a file or a pipe
(a log), every 0.1 s on a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, **options) -> tqdm:
    """A tqdm bar on stderr that does not flood a log with redraws; ``options`` go to tqdm."""
    options.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 5.0)
    options.setdefault("dynamic_ncols", True)
    options.setdefault("leave", False)
    return tqdm(iterable, **options)
