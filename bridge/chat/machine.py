"""The shared shape of the chat state machines: a ``(state, event) -> next`` table.

Each machine (``one2one``, ``adhoc``, ``delivery``) owns its enumerations and
its table in its own module (docs/architecture.md "State machines"); this module
only holds the lookup and the error, so that every machine raises the same
documented exception for an event its current state does not accept.
``IllegalTransition`` is a ``Conflict``: a REST operation that does not fit the
state answers 409.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from bridge.errors import Conflict

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class IllegalTransition(Conflict):
    """``event`` is not accepted in ``state`` (the table has no entry)."""

    def __init__(self, machine: str, state: enum.Enum, event: enum.Enum) -> None:
        super().__init__(f"{machine}: {event.name} is not allowed in state {state.name}")
        self.machine = machine
        self.state = state
        self.event = event


def lookup(machine: str, table: Mapping[tuple[S, E], S], state: S, event: E) -> S:
    """The next state for ``event`` in ``state``; raises :class:`IllegalTransition`."""
    try:
        return table[(state, event)]
    except KeyError:
        raise IllegalTransition(machine, state, event) from None
