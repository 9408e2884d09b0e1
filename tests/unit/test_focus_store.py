"""The focus's store contract (memory and SQL) and restart recovery over loopback SIP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.focus import ConferenceStore, MemoryConferenceStore, build_focus
from bridge.focus.store import ConferenceRecord, DialogRecord, MemberRecord
from sip.msrp import MSRPStack
from sip.stack import SipStack
from state.db import Database
from state.focus_store import SQLConferenceStore
from tests.peers.conf_participant import Participant, start_stack
from tests.unit.test_focus_loopback import install

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'focus.db'}")
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture(params=["memory", "sql"])
async def store(request: pytest.FixtureRequest, database: Database) -> ConferenceStore:
    return MemoryConferenceStore() if request.param == "memory" else SQLConferenceStore(database)


async def test_store_contract(store: ConferenceStore) -> None:
    conf = ConferenceRecord("sip:conf-1@h", "sip:a@h", "c1", "v1", "Lunch", T0)
    await store.save_conference(conf)
    await store.save_conference(ConferenceRecord("sip:conf-2@h", "sip:a@h", None, None, None, T0))
    dialog = DialogRecord(
        "cid", "lt", "rt", "<sip:conf-1@h>", "<sip:b@h>", "sip:b@h:5", ("<sip:p;lr>",), 7, True
    )
    await store.save_members(conf.uri, [MemberRecord("sip:b@h", "dialing-out")])
    await store.save_members(
        conf.uri, [MemberRecord("sip:b@h", "connected", "Bob", False, None, dialog)]
    )
    await store.save_members(conf.uri, [MemberRecord("sip:a@h", "connected", None, True)])
    await store.end_conference("sip:conf-2@h", T0)
    live = await store.live_conferences()
    assert [c.uri for c, _ in live] == [conf.uri]
    ((got, members),) = live
    assert got == conf
    by_uri = {m.uri: m for m in members}
    assert by_uri["sip:b@h"].dialog == dialog and by_uri["sip:b@h"].display_name == "Bob"
    assert by_uri["sip:a@h"].chairman and by_uri["sip:a@h"].dialog is None
    await store.end_conference(conf.uri, T0)
    assert await store.live_conferences() == []


async def _focus(store: ConferenceStore) -> tuple[SipStack, MSRPStack, object]:
    sip = await start_stack()
    msrp = MSRPStack("127.0.0.1", 0)
    await msrp.start()
    focus = build_focus(
        sip, msrp, factory_uri=f"sip:conference-factory@127.0.0.1:{sip.port}", store=store
    )
    install(sip, focus)
    return sip, msrp, focus


async def test_restart_recovery_byes_stored_dialogs_with_410(database: Database) -> None:
    store = SQLConferenceStore(database)
    sip, msrp, focus = await _focus(store)
    alice, bob = await Participant("alice").start(), await Participant("bob").start()
    try:
        response = await alice.create(f"sip:conference-factory@127.0.0.1:{sip.port}", [bob.uri])
        assert response.status == 200
        await bob.wait(lambda: bob.session is not None)

        async def stored() -> None:
            while True:
                live = await store.live_conferences()
                if live and sum(m.dialog is not None for m in live[0][1]) == 2:
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(stored(), 5)
        await msrp.close()
        await sip.stop()  # a crash: nobody BYEs
        sip2, msrp2, focus2 = await _focus(SQLConferenceStore(database))
        try:
            assert await focus2.start() == 2  # type: ignore[attr-defined]
            await bob.wait(lambda: bob.bye_reasons != [] and alice.bye_reasons != [])
            assert bob.bye_reasons == ['SIP;cause=410;text="Gone"']
            assert alice.bye_reasons == ['SIP;cause=410;text="Gone"']
            assert await store.live_conferences() == []
        finally:
            await focus2.close()  # type: ignore[attr-defined]
            await msrp2.close()
            await sip2.stop()
    finally:
        await alice.stop()
        await bob.stop()
