"""Progress bars for the training loops: tqdm's when it is installed, otherwise a silent stand-in.

tqdm comes with the ``cli`` extra (``pip install "flowforge[cli]"``). A progress bar is not
essential to a fit, so without tqdm the loops run exactly the same, only without a bar; nothing
warns or raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

__all__ = ["ProgressBar", "SilentBar", "progress_bar"]


class ProgressBar(Protocol):
    """What the loops may call on a bar (tqdm's names)."""

    def __iter__(self) -> Iterator[Any]: ...

    def update(self, n: float = 1) -> Any: ...

    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...

    def close(self) -> None: ...


class SilentBar:
    """The part of tqdm's interface the training loops use, doing nothing: iteration over the
    wrapped iterable, :meth:`update`, :meth:`set_postfix`, :meth:`close`, and ``with`` blocks."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None) -> None:
        self.iterable = iterable
        self.total = total
        self.n: float = 0

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress bar was made without an iterable; call update() instead")
        for item in self.iterable:
            yield item
            self.n += 1

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> SilentBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress_bar(
    total: int | None = None, iterable: Iterable[Any] | None = None, enabled: bool = True, **kw: Any
) -> ProgressBar:
    """A progress bar over ``iterable`` (or counting to ``total`` by ``update``): a ``tqdm.auto`` bar
    when ``enabled`` and tqdm is installed, else a :class:`SilentBar`. ``kw`` goes to tqdm (``unit``,
    ``dynamic_ncols``, ...) and is ignored by the stand-in."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is optional (the cli extra): fall through to the silent bar
            pass
        else:
            return tqdm(iterable, total=total, **kw)
    return SilentBar(iterable, total)
