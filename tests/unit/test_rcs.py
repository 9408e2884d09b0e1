"""sip.rcs: profile header sets, ids, CPIM parties, INVITE classification, user URIs."""

from __future__ import annotations

import re

import pytest

from sip import rcs
from sip.rcs import ChatIds, InviteKind, Profile

CPM_TAG = '+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"'


def test_feature_tags_and_user_agent() -> None:
    assert rcs.feature_tags(Profile.CPM) == CPM_TAG
    assert rcs.feature_tags(Profile.SIMPLE_IM) == "+g.oma.sip-im"
    assert rcs.user_agent(Profile.CPM) == "CPM-client/OMA1.0"
    assert rcs.user_agent(Profile.SIMPLE_IM) == "IM-client/OMA1.0"


def test_contribution_ids_per_profile() -> None:
    cpm = rcs.new_contribution_id(Profile.CPM)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", cpm)
    simple = rcs.new_contribution_id(Profile.SIMPLE_IM)
    assert re.fullmatch(r"[0-9a-f]{32}", simple)
    assert rcs.new_contribution_id(Profile.CPM) != cpm


def test_new_chat_ids_keeps_the_conversation_in_cpm_only() -> None:
    ids = rcs.new_chat_ids(Profile.CPM, "conv-1")
    assert ids.conversation_id == "conv-1"
    assert rcs.new_chat_ids(Profile.CPM).conversation_id is not None
    assert rcs.new_chat_ids(Profile.SIMPLE_IM, "conv-1").conversation_id is None


def test_cpm_session_headers() -> None:
    ids = ChatIds("c1", "v1", in_reply_to="p1")
    assert rcs.session_headers(Profile.CPM, ids) == (
        ("Accept-Contact", "*;" + CPM_TAG),
        ("P-Preferred-Service", "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session"),
        ("Contribution-ID", "c1"),
        ("Conversation-ID", "v1"),
        ("InReplyTo-Contribution-ID", "p1"),
    )


def test_simple_im_session_headers_have_no_cpm_items() -> None:
    headers = rcs.session_headers(Profile.SIMPLE_IM, ChatIds("c1", "v1"))
    assert headers == (("Accept-Contact", "*;+g.oma.sip-im"), ("Contribution-ID", "c1"))


def test_answer_headers_echo_the_ids() -> None:
    assert rcs.answer_headers(Profile.CPM, None) == ()
    assert rcs.answer_headers(Profile.CPM, ChatIds("c1", "v1")) == (
        ("Contribution-ID", "c1"),
        ("Conversation-ID", "v1"),
    )
    assert rcs.answer_headers(Profile.SIMPLE_IM, ChatIds("c1", "v1")) == (
        ("Contribution-ID", "c1"),
    )


def test_pager_headers() -> None:
    cpm = dict(rcs.pager_headers(Profile.CPM, "v9"))
    assert cpm["P-Preferred-Service"] == "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg"
    assert cpm["Accept-Contact"].endswith('cpm.msg"')
    assert cpm["Conversation-ID"] == "v9"
    assert "Conversation-ID" not in dict(rcs.pager_headers(Profile.CPM))
    assert rcs.pager_headers(Profile.SIMPLE_IM) == (("Accept-Contact", "*;+g.oma.sip-im"),)


def test_cpim_party() -> None:
    assert rcs.cpim_party(Profile.CPM, "tel:+15555550001") == "tel:+15555550001"
    assert rcs.cpim_party(Profile.SIMPLE_IM, "tel:+1") == "sip:anonymous@anonymous.invalid"


def test_chat_ids_of() -> None:
    assert rcs.chat_ids_of({}) is None
    assert rcs.chat_ids_of({"contribution-id": "  "}) is None
    assert rcs.chat_ids_of({"contribution-id": "c", "conversation-id": "v"}) == ChatIds("c", "v")
    assert rcs.chat_ids_of({"contribution-id": "c", "conversation-id": ""}) == ChatIds("c")


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({}, InviteKind.ONE_TO_ONE),
        ({"contact": "<sip:conf@h>;isfocus"}, InviteKind.GROUP),
        ({"contact": "<sip:a@h;isfocus>"}, InviteKind.ONE_TO_ONE),  # a URI parameter
        ({"referred_by": "<tel:+1>"}, InviteKind.SF_PUSH),
        ({"asserted_identity": "<sip:rcse-standfw@ims.test>"}, InviteKind.SF_NOTIFICATIONS),
        (
            {"asserted_identity": "<sip:rcse-standfw@ims.test>", "multipart": True},
            InviteKind.ONE_TO_ONE,
        ),
        (
            {
                "accept_contact": '*;+g.3gpp.iari-ref="urn%3Aurn-7%3A3gpp-application.ims.iari.'
                'rcs.fthttp"'
            },
            InviteKind.FILE_TRANSFER,
        ),
        ({"contact": "<sip:conf@h>;isfocus", "referred_by": "<tel:+1>"}, InviteKind.GROUP),
    ],
)
def test_classify_invite(kwargs: dict[str, object], kind: InviteKind) -> None:
    args: dict[str, object] = {
        "contact": "<sip:+15555550001@127.0.0.1:5060>;" + CPM_TAG,
        "asserted_identity": "<tel:+15555550001>",
        "referred_by": None,
        "accept_contact": "*;" + CPM_TAG,
        "multipart": False,
    }
    args.update(kwargs)
    assert rcs.classify_invite(**args) is kind  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("tel:+15555550001", "tel:+15555550001"),
        ("<tel:+1-555-555-0001>", "tel:+15555550001"),
        ("sip:+15555550001@ims.test;user=phone", "tel:+15555550001"),
        ('"Alice" <sip:+15555550001@IMS.test:5060;transport=tcp>', "tel:+15555550001"),
        ("sip:Alice@IMS.Test", "sip:Alice@ims.test"),
        ("sips:bob:secret@Example.com", "sips:bob@example.com"),
    ],
)
def test_normalize_user(raw: str, canonical: str) -> None:
    assert rcs.normalize_user(raw) == canonical


@pytest.mark.parametrize("raw", ["", "mailto:a@b", "sip:host.only", "<tel:+1", "tel:"])
def test_normalize_user_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        rcs.normalize_user(raw)
