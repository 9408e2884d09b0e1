"""Property tests: every accepted spelling of a user names one canonical user, and the
percent-encoded form emitted in URLs reads back as the same user."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from rest.uris import ServerRoot, canonical_user, quote_segment

digits = st.text(alphabet="0123456789", min_size=4, max_size=15)
sip_users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=20)
hosts = st.sampled_from(["ims.test", "IMS.Example.COM", "10.0.0.1", "h.example:5061"])


@given(digits)
def test_number_spellings_are_one_user(number: str) -> None:
    tel = f"tel:+{number}"
    spellings = [
        f"+{number}",
        tel,
        quote(tel, safe=""),
        quote(tel, safe="").lower(),
        f"sip:+{number}@ims.test;user=phone",
        quote(f"sip:+{number}@ims.test", safe=""),
        f"<{tel}>",
    ]
    assert {canonical_user(s) for s in spellings} == {tel}


@given(sip_users, hosts)
def test_sip_users_round_trip_through_urls(user: str, host: str) -> None:
    canonical = canonical_user(f"sip:{user}@{host};transport=tcp")
    assert canonical == f"sip:{user}@{host.lower()}"
    assert canonical_user(quote_segment(canonical)) == canonical
    url = ServerRoot("http://h/p").chat(canonical, "subscriptions")
    segment = url.split("/")[6]
    assert "@" not in segment and ":" not in segment
    assert canonical_user(segment) == canonical
