"""What the K-Means core keeps per process: scikit-learn's compiled Lloyd step, loaded once
by a long-lived process, and the BLAS thread-pool controller. Everything else in the core is
pure functions of their arguments (:mod:`.cluster`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

#: scikit-learn's compiled Lloyd step (the one its KMeans runs): assignment by blocked GEMM +
#: argmin and the weighted M-step in one pass over the data, OpenMP-parallel, 2-3x faster than
#: the numpy step below (tests hold the two to the same result). Importing scikit-learn costs
#: 1-3 s here, more than the step saves on any one image, so it is used only once a
#: long-lived process has loaded it with :func:`compiled_lloyd_step` (the worker does, before
#: forking); a one-shot ``kseg segment`` runs the numpy step. ``_UNSET`` until loaded; None
#: when it cannot be imported (it is private API).
_UNSET: Any = object()
_sk_lloyd_step: Any = _UNSET


def compiled_lloyd_step() -> Callable[..., None] | None:
    """Load scikit-learn's compiled Lloyd step for this process's clusterings; None when it
    is unavailable (the numpy step is used then)."""
    global _sk_lloyd_step, _blas_controller
    if _sk_lloyd_step is _UNSET:
        try:
            from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense
        except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
            _sk_lloyd_step = None
        else:
            _sk_lloyd_step = lloyd_iter_chunked_dense
        _blas_controller = None  # scipy's BLAS came with it: scan the libraries again
    return _sk_lloyd_step  # type: ignore[no-any-return]


def loaded_lloyd_step() -> Callable[..., None] | None:
    """The compiled step if this process has loaded it, else None (never imports)."""
    return None if _sk_lloyd_step is _UNSET else _sk_lloyd_step  # type: ignore[no-any-return]


_blas_controller: Any = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS on one thread inside the block (process-wide, restored on exit).

    The matrix products here are many small ones ((16 k × 4) @ (4 × k)); a threaded BLAS
    gains nothing on them when the machine is idle and, when its cores are busy (a worker
    running two jobs, other processes), its spinning threads wait on each other: measured 8×
    slower on the 2-core build machine under load, against 1× single-threaded.

    The libraries are scanned once per process (a fresh scan costs ~3 ms once scikit-learn is
    loaded), and again after :func:`compiled_lloyd_step` loads scipy's BLAS.
    """
    global _blas_controller
    try:
        from threadpoolctl import ThreadpoolController  # installed with scikit-learn
    except ImportError:  # pragma: no cover - threadpoolctl is a scikit-learn dependency
        yield
        return
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


__all__ = ["compiled_lloyd_step", "loaded_lloyd_step", "single_threaded_blas"]
