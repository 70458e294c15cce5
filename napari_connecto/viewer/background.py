"""Work on a napari worker thread, its outcome as a future resolved on the main thread."""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run_in_background"]

T = TypeVar("T")


def run_in_background(
    job: Callable[..., T],
    *args: Any,
    done: Callable[[T], None],
    failed: Callable[[BaseException], None],
    **kwargs: Any,
) -> Future[T]:
    """Run ``job(*args, **kwargs)`` on a napari worker; report and resolve on the main thread.

    Parameters
    ----------
    job : callable
        The work; it must not touch Qt or napari objects.
    *args, **kwargs
        Its arguments.
    done, failed : callable
        Called on the main thread (as Qt delivers the worker's signals) with the
        result or the error, before the future is resolved with it.

    Returns
    -------
    concurrent.futures.Future
        Resolves to what ``job`` returned, or to its error.
    """
    from napari.qt.threading import create_worker

    future: Future[T] = Future()
    future.set_running_or_notify_cancel()

    def returned(result: T) -> None:
        done(result)
        future.set_result(result)

    def errored(exc: BaseException) -> None:
        failed(exc)
        future.set_exception(exc)

    worker = create_worker(job, *args, _start_thread=False, _ignore_errors=True, **kwargs)
    worker.returned.connect(returned)
    worker.errored.connect(errored)
    worker.start()
    return future
