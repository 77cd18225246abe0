"""Pausing the cyclic garbage collector around bulk object creation (reading, validating 100k rows).

Creating hundreds of thousands of small objects triggers generation-0/1/2 collections that rescan every live
row; pausing them makes bulk phases several times faster. Re-entrant and thread-safe: collection resumes when
the last paused block ends, and only if it was enabled before the first.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
