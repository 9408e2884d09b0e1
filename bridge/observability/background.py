"""One background task of the running bridge, started once and stopped with it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

__all__ = ["Background"]


class Background:
    """A named task running :meth:`_run` (a loop of the subclass) until :meth:`stop`."""

    task_name: ClassVar[str]
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task (inside the running loop); a second call does nothing."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Cancel the task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        raise NotImplementedError
