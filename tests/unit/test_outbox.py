"""Repository contract of state.outbox and state.channels, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.ids import ChannelId, SubscriptionId, UserUri
from bridge.ports import Notification
from bridge.subscriptions import NewSubscription
from state import channels, outbox
from state import repository as repo
from state.db import Database
from tests.db_fixtures import postgres_database

ALICE = UserUri("tel:+15551230001")
BOB = UserUri("sip:bob@ims.test")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CB = "http://127.0.0.1:1/cb"


async def put(
    db: Database, sub: str = "sub-1", url: str = CB, at: datetime = T0, **body: object
) -> Notification:
    async with db.sessions.begin() as s:
        return await outbox.enqueue(
            s,
            user=ALICE,
            subscription_id=SubscriptionId(sub),
            notify_url=url,
            root="chatMessageNotification",
            body=body,
            now=at,
        )


def new_channel(user: UserUri = ALICE, correlator: str | None = None, lifetime: int = 60):
    cid = channels.new_channel_id()
    return channels.NewChannel(
        id=cid,
        user=user,
        channel_type="LongPolling",
        client_correlator=correlator,
        application_tag="tag",
        max_notifications=10,
        lifetime=lifetime,
        callback_url=f"http://bridge.test/notificationchannel/v1/x/channels/{cid}/callback",
    )


async def test_enqueue_round_trips_the_notification(db: Database) -> None:
    n = await put(db, text="héllo", nested={"a": [1, True, None]})
    assert n.id > 0 and n.user == ALICE and n.subscription_id == "sub-1"
    assert n.created_at == T0 and n.channel_id is None and n.notify_url == CB
    assert n.document() == {
        "chatMessageNotification": {"text": "héllo", "nested": {"a": [1, True, None]}}
    }
    async with db.sessions() as s:
        assert await outbox.pending_for(s, "sub-1") == [n]
        assert await outbox.count_pending(s) == 1
        assert await outbox.count_pending(s, channels=True) == 0


async def test_enqueue_refuses_an_empty_root(db: Database) -> None:
    async with db.sessions.begin() as s:
        with pytest.raises(ValueError):
            await outbox.enqueue(
                s, user=ALICE, subscription_id=SubscriptionId("s"), notify_url=CB, root="", body={}
            )


async def test_lane_heads_are_one_per_subscription_soonest_first(db: Database) -> None:
    a1 = await put(db, "a")
    await put(db, "a")
    b1 = await put(db, "b")
    c1 = await put(db, "c")
    async with db.sessions.begin() as s:
        await outbox.record_failure(
            s, a1.id, error="HTTP 500", next_attempt_at=T0 + timedelta(seconds=30)
        )
    async with db.sessions() as s:
        heads = await outbox.lane_heads(s, now=T0, limit=10)
    assert [h.notification.id for h in heads] == [b1.id, c1.id, a1.id]
    assert heads[-1].attempts == 1 and heads[-1].next_attempt_at == T0 + timedelta(seconds=30)
    async with db.sessions() as s:
        assert len(await outbox.lane_heads(s, now=T0, limit=1)) == 1
        head = await outbox.lane_head(s, "a")
        assert head is not None and head.notification.id == a1.id


async def test_claims_are_exclusive_until_they_run_out(db: Database) -> None:
    n = await put(db)
    until = T0 + timedelta(seconds=10)
    async with db.sessions.begin() as s:
        assert await outbox.claim(s, n.id, owner="w1", now=T0, until=until)
    async with db.sessions.begin() as s:
        assert not await outbox.claim(s, n.id, owner="w2", now=T0, until=until)
        assert await outbox.lane_heads(s, now=T0, limit=10) == []  # claimed heads are hidden
    later = until + timedelta(seconds=1)
    async with db.sessions.begin() as s:
        assert await outbox.claim(s, n.id, owner="w2", now=later, until=later)
    async with db.sessions.begin() as s:
        await outbox.release_claim(s, n.id, owner="w1")  # not w1's any more: no effect
        assert not await outbox.claim(s, n.id, owner="w3", now=T0, until=until)
        await outbox.release_claim(s, n.id, owner="w2")
        assert await outbox.claim(s, n.id, owner="w3", now=T0, until=until)
        assert await outbox.release_claims(s, "w3") == 1
    async with db.sessions.begin() as s:
        assert await outbox.delete_notification(s, n.id)
        assert not await outbox.delete_notification(s, n.id)
        assert not await outbox.claim(s, n.id, owner="w1", now=T0, until=until)


async def test_concurrent_claims_have_one_winner(db: Database) -> None:
    n = await put(db)

    async def try_claim(owner: str) -> bool:
        async with db.sessions.begin() as s:
            return await outbox.claim(s, n.id, owner=owner, now=T0, until=T0 + timedelta(1))

    results = await asyncio.gather(*(try_claim(f"w{i}") for i in range(5)))
    assert sorted(results) == [False] * 4 + [True]


async def test_notifications_for_a_channel_callback_queue_into_it(db: Database) -> None:
    async with db.sessions.begin() as s:
        ch, created = await channels.create_channel(s, new_channel(), now=T0)
    assert created
    first = await put(db, url=ch.callback_url, seq=1)
    second = await put(db, url=ch.callback_url, seq=2)
    await put(db, url=CB)
    assert first.channel_id == ch.id == second.channel_id
    async with db.sessions.begin() as s:
        assert await outbox.count_pending(s, channels=True) == 2
        assert [h.notification.notify_url for h in await outbox.lane_heads(s, now=T0, limit=9)] == [
            CB
        ]  # channel items are never POSTed
        taken = await channels.take_from_channel(s, ch.id, limit=1, now=T0)
    assert taken == [first]
    async with db.sessions.begin() as s:
        assert await channels.take_from_channel(s, ch.id, limit=5, now=T0) == [second]
        assert await channels.take_from_channel(s, ch.id, limit=5, now=T0) == []


async def test_an_expired_channel_no_longer_captures_notifications(db: Database) -> None:
    async with db.sessions.begin() as s:
        ch, _ = await channels.create_channel(s, new_channel(lifetime=5), now=T0)
    n = await put(db, url=ch.callback_url, at=T0 + timedelta(seconds=6))
    assert n.channel_id is None  # left for the worker, which drops it as a dead channel URL


async def test_channel_create_get_list_and_correlator(db: Database) -> None:
    async with db.sessions.begin() as s:
        a, created_a = await channels.create_channel(s, new_channel(correlator="k"), now=T0)
        again, created_again = await channels.create_channel(s, new_channel(correlator="k"), now=T0)
        bobs, created_bobs = await channels.create_channel(s, new_channel(BOB, "k"), now=T0)
    assert created_a and not created_again and created_bobs
    assert again == a and bobs.id != a.id
    assert a.expires_at == T0 + timedelta(seconds=60) and a.remaining(T0) == 60
    assert a.remaining(T0 + timedelta(seconds=59.5)) == 1
    assert a.remaining(T0 + timedelta(seconds=61)) == 0
    async with db.sessions() as s:
        assert await channels.get_channel(s, ALICE, a.id, now=T0) == a
        assert await channels.get_channel(s, BOB, a.id, now=T0) is None
        assert await channels.get_channel(s, ALICE, a.id, now=T0 + timedelta(seconds=60)) is None
        assert await channels.list_channels(s, ALICE, now=T0) == [a]
        assert await channels.list_channels(s, ALICE, now=T0 + timedelta(seconds=61)) == []
        assert await channels.channel_alive(s, a.id, now=T0)
        assert not await channels.channel_alive(s, a.id, now=T0 + timedelta(seconds=60))


async def test_an_expired_correlator_is_replaced(db: Database) -> None:
    async with db.sessions.begin() as s:
        old, _ = await channels.create_channel(s, new_channel(correlator="k", lifetime=1), now=T0)
    later = T0 + timedelta(seconds=2)
    async with db.sessions.begin() as s:
        fresh, created = await channels.create_channel(s, new_channel(correlator="k"), now=later)
    assert created and fresh.id != old.id
    async with db.sessions() as s:
        assert await channels.get_channel(s, ALICE, old.id, now=T0) is None


async def test_concurrent_correlator_creates_one_channel(db: Database) -> None:
    async def create() -> tuple[channels.Channel, bool]:
        async with db.sessions.begin() as s:
            return await channels.create_channel(s, new_channel(correlator="race"), now=T0)

    results = await asyncio.gather(*(create() for _ in range(4)), return_exceptions=True)
    stored = [r for r in results if isinstance(r, tuple)]
    assert stored, results
    assert len({c.id for c, _ in stored}) == 1
    assert sum(1 for _, created in stored if created) == 1


async def test_deleting_or_expiring_a_channel_drops_queue_and_subscriptions(db: Database) -> None:
    async with db.sessions.begin() as s:
        keep, _ = await channels.create_channel(s, new_channel(), now=T0)
        gone, _ = await channels.create_channel(s, new_channel(), now=T0)
        short, _ = await channels.create_channel(s, new_channel(lifetime=1), now=T0)
        for ch in (keep, gone, short):
            await repo.create_subscription(s, NewSubscription(ALICE, ch.callback_url), T0)
    for ch in (keep, gone, short):
        await put(db, url=ch.callback_url)
    async with db.sessions.begin() as s:
        assert await channels.delete_channel(s, BOB, gone.id) is None
        assert await channels.delete_channel(s, ALICE, gone.id) == gone
        assert await channels.delete_channel(s, ALICE, gone.id) is None
        expired = await channels.expire_channels(s, now=T0 + timedelta(seconds=2))
    assert expired == [short]
    async with db.sessions() as s:
        urls = [sub.notify_url for sub in await repo.list_subscriptions(s, ALICE, T0)]
        assert urls == [keep.callback_url]
        assert await outbox.count_pending(s, channels=True) == 1
        left = await s.scalars(sa.select(outbox.OutboxRow.channel_id))
        assert list(left) == [keep.id]


async def test_stale_channel_items_are_dropped(db: Database) -> None:
    async with db.sessions.begin() as s:
        ch, _ = await channels.create_channel(s, new_channel(lifetime=3600), now=T0)
    await put(db, url=ch.callback_url, at=T0)
    await put(db, url=ch.callback_url, at=T0 + timedelta(seconds=100))
    await put(db, url=CB, at=T0)  # callback rows age out in the worker, not here
    async with db.sessions.begin() as s:
        assert await outbox.drop_stale_channel_items(s, T0 + timedelta(seconds=50)) == 1
        assert await outbox.count_pending(s, channels=True) == 1
        assert await outbox.count_pending(s) == 1


async def test_rows_survive_reopening_the_store(db: Database) -> None:
    n = await put(db, seq=7)
    async with db.sessions.begin() as s:
        ch, _ = await channels.create_channel(s, new_channel(), now=T0)
    q = await put(db, url=ch.callback_url, seq=8)
    again = Database(db.url.render_as_string(hide_password=False))
    try:
        async with again.sessions.begin() as s:
            assert await outbox.pending_for(s, "sub-1") == [n, q]
            assert await channels.get_channel(s, ALICE, ChannelId(ch.id), now=T0) == ch
    finally:
        await again.close()


def claim_args(owner: str, at: datetime = T0, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"owner": owner, "now": at, "until": at + timedelta(seconds=10)}
    args.update({"lanes": 10, "per_lane": 10}, **kw)
    return args


def lanes_of(claimed: outbox.Claimed) -> dict[str, list[int]]:
    return {b.subscription_id: b.ids for b in claimed.batches}


async def test_claim_lanes_takes_batches_from_each_free_due_head(db: Database) -> None:
    a = [await put(db, "a", seq=i) for i in range(5)]
    b = [await put(db, "b", seq=i) for i in range(2)]
    c = [await put(db, "c", seq=i) for i in range(2)]
    async with db.sessions.begin() as s:
        await outbox.record_failure(s, c[0].id, error="x", next_attempt_at=T0 + timedelta(9))
        got = await outbox.claim_lanes(s, **claim_args("w1", per_lane=3))
    assert lanes_of(got) == {"a": [n.id for n in a[:3]], "b": [n.id for n in b]}
    assert got.next_due == T0 + timedelta(9)  # lane c waits for its backoff
    first = got.batches[0].entries[0]
    assert first.notification == a[0] and first.attempts == 0
    async with db.sessions.begin() as s:
        # every head is held now (or not due): nothing more for anyone, a's tail included
        assert lanes_of(await outbox.claim_lanes(s, **claim_args("w2"))) == {}
        assert lanes_of(await outbox.claim_lanes(s, **claim_args("w1", busy={"a"}))) == {}
        assert await outbox.settle(s, [n.id for n in a[:3]]) == 3
        assert lanes_of(await outbox.claim_lanes(s, **claim_args("w2"))) == {
            "a": [n.id for n in a[3:]]
        }


async def test_claim_lanes_bounds_lanes_and_soonest_due_goes_first(db: Database) -> None:
    late = await put(db, "late", at=T0 + timedelta(seconds=2))
    early = await put(db, "early", at=T0)
    async with db.sessions.begin() as s:
        got = await outbox.claim_lanes(s, **claim_args("w1", at=T0 + timedelta(5), lanes=1))
        assert lanes_of(got) == {"early": [early.id]}
        got = await outbox.claim_lanes(s, **claim_args("w1", at=T0 + timedelta(5), lanes=1))
        assert lanes_of(got) == {"late": [late.id]}


async def test_a_released_batch_and_expired_claims_are_claimable_again(db: Database) -> None:
    rows = [await put(db, "a", seq=i) for i in range(3)]
    ids = [n.id for n in rows]
    async with db.sessions.begin() as s:
        assert lanes_of(await outbox.claim_lanes(s, **claim_args("w1"))) == {"a": ids}
        assert await outbox.extend_claims(s, ids, owner="w1", until=T0 + timedelta(seconds=60))
        assert not await outbox.extend_claims(s, ids, owner="w2", until=T0)
        assert await outbox.release(s, ids[1:], owner="w2") == 0  # not w2's
        assert await outbox.release(s, ids[1:], owner="w1") == 2
        # the head is still w1's: its released tail is not free for anyone else
        assert lanes_of(await outbox.claim_lanes(s, **claim_args("w2"))) == {}
        later = T0 + timedelta(seconds=61)
        assert lanes_of(await outbox.claim_lanes(s, **claim_args("w2", at=later))) == {"a": ids}


async def test_two_owners_claiming_at_once_never_split_a_lane(db: Database) -> None:
    for i in range(40):
        await put(db, f"s{i % 4}", seq=i)

    async def grab(owner: str) -> outbox.Claimed:
        async with db.sessions.begin() as s:
            return await outbox.claim_lanes(s, **claim_args(owner, per_lane=20))

    one, two = await asyncio.gather(grab("w1"), grab("w2"))
    won = [lanes_of(one), lanes_of(two)]
    assert not set(won[0]) & set(won[1])
    taken = {sub: ids for lanes in won for sub, ids in lanes.items()}
    async with db.sessions() as s:
        for sub, ids in taken.items():
            assert ids == [n.id for n in await outbox.pending_for(s, sub)]  # whole lane, in order


async def test_claim_if_alone_only_takes_a_lane_of_one(db: Database) -> None:
    first = await put(db, "a")
    second = await put(db, "a")
    lone = await put(db, "b")
    until = T0 + timedelta(seconds=10)
    async with db.sessions.begin() as s:
        assert not await outbox.claim_if_alone(s, second.id, owner="w1", until=until)
        assert not await outbox.claim_if_alone(s, first.id, owner="w1", until=until)
        assert await outbox.claim_if_alone(s, lone.id, owner="w1", until=until)
        assert not await outbox.claim_if_alone(s, lone.id, owner="w2", until=until)
        assert lanes_of(await outbox.claim_lanes(s, **claim_args("w2"))) == {
            "a": [first.id, second.id]
        }


async def test_drop_for_subscription(db: Database) -> None:
    await put(db, "a")
    await put(db, "a")
    await put(db, "b")
    async with db.sessions.begin() as s:
        assert await outbox.drop_for_subscription(s, "a") == 2
        assert await outbox.drop_for_subscription(s, "a") == 0
        assert await outbox.count_pending(s) == 1


async def test_another_users_channel_is_never_filled(db: Database) -> None:
    async with db.sessions.begin() as s:
        bobs, _ = await channels.create_channel(s, new_channel(BOB), now=T0)
    n = await put(db, url=bobs.callback_url)  # ALICE's subscription naming BOB's callbackURL
    assert n.channel_id is None
    async with db.sessions() as s:
        assert await outbox.count_pending(s, channels=True) == 0


async def test_channel_hand_out_keeps_its_place_until_settled(db: Database) -> None:
    async with db.sessions.begin() as s:
        ch, _ = await channels.create_channel(s, new_channel(), now=T0)
    items = [await put(db, url=ch.callback_url, seq=i) for i in range(3)]
    until = T0 + timedelta(seconds=5)
    async with db.sessions.begin() as s:
        lent = await channels.claim_channel_items(
            s, ch.id, owner="p1", now=T0, until=until, limit=2
        )
        assert lent == items[:2]
        # a hand-out in progress holds the queue: no later item jumps ahead of it
        assert (
            await channels.claim_channel_items(s, ch.id, owner="p2", now=T0, until=until, limit=5)
            == []
        )
        assert await outbox.release(s, [n.id for n in lent], owner="p1") == 2
        again = await channels.claim_channel_items(
            s, ch.id, owner="p2", now=T0, until=until, limit=5
        )
        assert again == items
        assert await outbox.settle(s, [n.id for n in again]) == 3
        assert await outbox.count_pending(s, channels=True) == 0
        late = T0 + timedelta(seconds=61)  # the channel expired: nothing is handed out
    await put(db, url=ch.callback_url, at=T0)
    async with db.sessions.begin() as s:
        assert (
            await channels.claim_channel_items(s, ch.id, owner="p", now=late, until=late, limit=5)
            == []
        )


async def test_drop_for_expired_subscriptions(db: Database) -> None:
    new = NewSubscription(
        user=ALICE,
        notify_url=CB,
        callback_data=None,
        client_correlator=None,
        duration=10,
    )
    async with db.sessions.begin() as s:
        short, _ = await repo.create_subscription(s, new, T0)
        forever, _ = await repo.create_subscription(s, replace(new, duration=0), T0)
    await put(db, short.id)
    await put(db, forever.id)
    async with db.sessions.begin() as s:
        assert await outbox.drop_for_expired_subscriptions(s, T0 + timedelta(seconds=5)) == 0
        assert await outbox.drop_for_expired_subscriptions(s, T0 + timedelta(seconds=10)) == 1
        assert await outbox.pending_for(s, short.id) == []
        assert len(await outbox.pending_for(s, forever.id)) == 1


@pytest.fixture
async def pg(postgres_server) -> AsyncIterator[Database]:
    async with postgres_database(postgres_server) as database:
        yield database


@pytest.mark.integration
async def test_postgres_order_is_fixed_when_first_seen_not_by_id(pg: Database) -> None:
    # T1 takes the smaller id but commits after T2: whichever row the claim holder
    # saw first keeps its place, through a failed attempt and a second claim
    async with pg.sessions() as s1:
        async with s1.begin():
            early = await outbox.enqueue(
                s1,
                user=ALICE,
                subscription_id=SubscriptionId("a"),
                notify_url=CB,
                root="r",
                body={"n": "early id"},
                now=T0,
            )
            later = await put(pg, "a", n="later id")
            assert later.id > early.id
            async with pg.sessions.begin() as s:
                got = await outbox.claim_lanes(s, **claim_args("w1"))
                assert lanes_of(got) == {"a": [later.id]}
                await outbox.record_failure(s, later.id, error="x", next_attempt_at=T0)
        # T1 commits now
    async with pg.sessions.begin() as s:
        assert [n.id for n in await outbox.pending_for(s, "a")] == [later.id, early.id]
        got = await outbox.claim_lanes(s, **claim_args("w1"))
        assert lanes_of(got) == {"a": [later.id, early.id]}
        head = await outbox.lane_head(s, "a")
        assert head is not None and head.notification.id == later.id


@pytest.mark.integration
async def test_postgres_channel_order_is_fixed_when_first_handed_out(pg: Database) -> None:
    async with pg.sessions.begin() as s:
        ch, _ = await channels.create_channel(s, new_channel(), now=T0)
    until = T0 + timedelta(seconds=5)
    async with pg.sessions() as s1:
        async with s1.begin():
            early = await outbox.enqueue(
                s1,
                user=ALICE,
                subscription_id=SubscriptionId("a"),
                notify_url=ch.callback_url,
                root="r",
                body={},
                now=T0,
            )
            later = await put(pg, "a", url=ch.callback_url)
            async with pg.sessions.begin() as s:
                lent = await channels.claim_channel_items(
                    s, ch.id, owner="p", now=T0, until=until, limit=5
                )
                assert [n.id for n in lent] == [later.id]
                await outbox.release(s, [later.id], owner="p")  # the answer was not written
    async with pg.sessions.begin() as s:
        lent = await channels.claim_channel_items(s, ch.id, owner="p", now=T0, until=until, limit=5)
        assert [n.id for n in lent] == [later.id, early.id]


async def test_enqueue_many_routes_like_enqueue_in_one_go(db: Database) -> None:
    async with db.sessions.begin() as s:
        mine, _ = await channels.create_channel(s, new_channel(), now=T0)
        bobs, _ = await channels.create_channel(s, new_channel(BOB), now=T0)
    drafts = [
        outbox.Draft(ALICE, SubscriptionId("a"), CB, "r", {"seq": 0}),
        outbox.Draft(ALICE, SubscriptionId("a"), mine.callback_url, "r", {"seq": 1}),
        outbox.Draft(ALICE, SubscriptionId("b"), bobs.callback_url, "r", {"seq": 2}),
        outbox.Draft(ALICE, SubscriptionId("a"), CB, "r", {"seq": 3}),
    ]
    async with db.sessions.begin() as s:
        assert await outbox.enqueue_many(s, [], now=T0) == []
        made = await outbox.enqueue_many(s, drafts, now=T0)
        with pytest.raises(ValueError):
            await outbox.enqueue_many(s, [replace(drafts[0], root="")], now=T0)
    assert [n.body["seq"] for n in made] == [0, 1, 2, 3]
    assert [n.id for n in made] == sorted(n.id for n in made)
    assert [n.channel_id for n in made] == [None, mine.id, None, None]  # never Bob's channel
    async with db.sessions() as s:
        assert await outbox.pending_for(s, "a") == [made[0], made[1], made[3]]
        assert await outbox.pending_for(s, "b") == [made[2]]


async def test_claim_lanes_can_look_at_some_lanes_only(db: Database) -> None:
    a = await put(db, "a")
    await put(db, "b")
    async with db.sessions.begin() as s:
        assert lanes_of(await outbox.claim_lanes(s, **claim_args("w1", only=()))) == {}
        assert lanes_of(await outbox.claim_lanes(s, **claim_args("w1", only={"a", "z"}))) == {
            "a": [a.id]
        }
        assert set(lanes_of(await outbox.claim_lanes(s, **claim_args("w1")))) == {"b"}


async def test_writer_lock_is_shared_per_sqlite_database(db: Database, tmp_path) -> None:
    lock = outbox.writer_lock(db)
    if not db.is_sqlite:
        assert lock is None
        return
    assert lock is not None and outbox.writer_lock(db) is lock
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert outbox.writer_lock(other) is not lock
    finally:
        await other.close()
