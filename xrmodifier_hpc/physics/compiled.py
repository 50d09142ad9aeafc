"""Compiling numeric kernels with numba, cached on disk where numba can cache."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numba

log = logging.getLogger(__name__)


def compiled(**options: Any) -> Callable[[Callable], Callable]:
    """Compile with numba (``njit``, ``nogil``), cached on disk where numba finds a place.

    numba caches beside the module, else in the user's cache directory (``NUMBA_CACHE_DIR``
    overrides); where neither is writable (a read-only image and home) it refuses to cache:
    the kernels are then compiled in each process instead (~1.5 s) rather than failing.

    Parameters
    ----------
    **options
        Further ``numba.njit`` options (e.g. ``fastmath``).

    Returns
    -------
    callable
        A decorator that compiles its function.
    """

    def decorate(function: Callable) -> Callable:
        try:
            return numba.njit(cache=True, nogil=True, **options)(function)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            log.debug("numba cannot cache %s here (%s): compiling per process", function, exc)
            return numba.njit(cache=False, nogil=True, **options)(function)

    return decorate
