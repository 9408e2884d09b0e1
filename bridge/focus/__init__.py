"""The bridge's own conference focus (docs/group-chat.md): a SIP/MSRP endpoint of its own
that depends only on ``sip/`` and on its store port (``bridge.focus.store``).

Public API::

    focus = build_focus(sip_stack, msrp_stack, factory_uri="sip:conference-factory@host",
                        profile=rcs.Profile.CPM, store=SQLConferenceStore(db), max_size=100)
    await focus.start()                 # end conferences a crashed run left live
    focus.owns(request) -> bool         # the router asks this for INVITE/SUBSCRIBE/REFER
    focus.on_invite(IncomingInvite) / on_subscribe(IncomingSubscribe) / on_refer(IncomingRefer)
    await focus.close()                 # BYE everyone (cause 410), bounded
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from bridge.focus.focus import ConferenceFocus
from bridge.focus.store import ConferenceStore, MemoryConferenceStore
from sip import rcs
from sip.msrp import MSRPStack
from sip.stack import SipStack

__all__ = ["ConferenceFocus", "ConferenceStore", "MemoryConferenceStore", "build_focus"]


def build_focus(
    sip_stack: SipStack,
    msrp_stack: MSRPStack,
    *,
    factory_uri: str,
    profile: rcs.Profile = rcs.Profile.CPM,
    store: ConferenceStore | None = None,
    max_size: int = 100,
    invite_timeout: float = 60.0,
    clock: Callable[[], datetime] | None = None,
) -> ConferenceFocus:
    """A focus over running stacks (no settings read here; the composition root passes them)."""
    extra = {} if clock is None else {"clock": clock}
    return ConferenceFocus(
        sip_stack,
        msrp_stack,
        factory_uri=factory_uri,
        profile=profile,
        store=store if store is not None else MemoryConferenceStore(),
        max_size=max_size,
        invite_timeout=invite_timeout,
        **extra,  # type: ignore[arg-type]
    )
