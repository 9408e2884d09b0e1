"""OMA models: element names, JSON conventions, enumerations, addresses and dateTime."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from rest import models as m


def test_enumerations_spelled_as_decided() -> None:
    assert [e.value for e in m.EventType] == [
        "Accepted",
        "Declined",
        "SessionEnded",
        "SessionCancelled",
        "Successful",
        "Failed",
    ]
    assert [e.value for e in m.MessageStatus] == ["Sent", "Delivered", "Displayed", "Failed"]
    assert [e.value for e in m.ParticipantStatus] == [
        "Invited",
        "Connected",
        "Disconnected",
        "Declined",
        "Failed",
    ]
    assert [e.value for e in m.ComposingState] == ["active", "idle"]
    assert [e.value for e in m.NotificationFormat] == ["XML", "JSON"]


def test_notification_roots() -> None:
    assert sorted(m.NOTIFICATION_MODELS) == sorted(
        [
            "chatEventNotification",
            "chatSessionInvitationNotification",
            "chatMessageNotification",
            "chatMessageStatusNotification",
            "groupChatSessionInvitationNotification",
            "chatParticipantStatusNotification",
        ]
    )


def test_subscription_names_and_quoted_scalars() -> None:
    sub = m.ChatNotificationSubscription.model_validate(
        {
            "callbackReference": {"notifyURL": "https://app/cb", "notificationFormat": "JSON"},
            "duration": "900",
            "clientCorrelator": 12345,
            "confirmedChatSupported": "true",
            "adhocChatSupported": False,
            "resourceURL": "http://x/y",
        }
    )
    assert sub.duration == 900 and sub.client_correlator == "12345"
    assert sub.document() == {
        "chatNotificationSubscription": {
            "callbackReference": {"notifyURL": "https://app/cb", "notificationFormat": "JSON"},
            "duration": 900,
            "clientCorrelator": "12345",
            "confirmedChatSupported": True,
            "adhocChatSupported": False,
            "resourceURL": "http://x/y",
        }
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [("Displayed", ["Displayed"]), (["Delivered", "Displayed"], ["Delivered", "Displayed"])],
)
def test_report_request_string_or_array(given, expected) -> None:
    msg = m.ChatMessage.model_validate({"text": "Hello", "reportRequest": given})
    assert msg.to_json()["reportRequest"] == expected
    assert msg.reports == frozenset(m.MessageStatus(v) for v in expected)
    assert m.ChatMessage(text="x").reports == frozenset()
    assert "reportRequest" not in m.ChatMessage(text="x").to_json()


def test_unknown_elements_and_values_refused() -> None:
    with pytest.raises(ValidationError) as err:
        m.ChatMessage.model_validate({"text": "x", "colour": "red"})
    assert err.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(ValidationError) as err:
        m.IsComposing.model_validate({"state": "Active"})  # case matters
    assert err.value.errors()[0]["type"] == "enum"


def test_datetime_is_utc_z() -> None:
    c = m.IsComposing.model_validate({"state": "active", "lastActive": "2013-01-25T12:00:00+01:00"})
    assert c.last_active == datetime(2013, 1, 25, 11, 0, tzinfo=UTC)
    assert c.to_json() == {"state": "active", "lastActive": "2013-01-25T11:00:00Z"}
    naive = m.IsComposing.model_validate({"state": "idle", "lastActive": "2013-01-25T11:00:00"})
    assert naive.to_json()["lastActive"] == "2013-01-25T11:00:00Z"
    assert (
        m.format_datetime(datetime(2020, 2, 3, 4, 5, 6, 789, tzinfo=UTC)) == "2020-02-03T04:05:06Z"
    )


def test_addresses_canonical() -> None:
    p = m.ParticipantInformation.model_validate({"address": "sip:+15551230002@ims.test;user=phone"})
    assert p.address == "tel:+15551230002"
    with pytest.raises(ValidationError) as err:
        m.ParticipantInformation.model_validate({"address": "bob"})
    assert err.value.errors()[0]["type"] == "user_uri"


def test_notify_url_must_be_absolute_http() -> None:
    for bad in ("/cb", "ftp://host/cb", "http://", "mailto:a@b"):
        with pytest.raises(ValidationError):
            m.CallbackReference.model_validate({"notifyURL": bad})


def test_chat_message_notification_choice() -> None:
    link = [{"rel": "MessageStatusReport", "href": "http://x/status"}]
    doc = {
        "chatMessageNotification": {
            "callbackData": "GSMA3",
            "link": link,
            "dateTime": "2012-11-09T15:36:13Z",
            "chatMessage": {"text": "hello user4"},
            "sessionId": "-797939895",
            "messageId": "1352475373833-1790113032",
            "senderAddress": "tel:+15554000003",
        }
    }
    note = m.parse_document(doc, m.ChatMessageNotification)
    assert note.document() == doc
    typing = {"isComposing": {"state": "active", "refresh": 60}}
    base = {"sessionId": "adhoc", "senderAddress": "tel:+15554000003"}
    assert m.ChatMessageNotification.model_validate(base | typing).message_id is None
    with pytest.raises(ValidationError):  # neither
        m.ChatMessageNotification.model_validate(base)
    with pytest.raises(ValidationError):  # both
        m.ChatMessageNotification.model_validate(base | typing | {"chatMessage": {"text": "x"}})
    with pytest.raises(ValidationError):  # chatMessage without messageId
        m.ChatMessageNotification.model_validate(base | {"chatMessage": {"text": "x"}})
    with pytest.raises(ValueError):
        m.parse_document({"messageNotification": {}}, m.ChatMessageNotification)


def test_other_notifications_round_trip() -> None:
    link = [{"rel": "ChatSessionInformation", "href": "http://x/s"}]
    samples = [
        m.ChatEventNotification(
            callback_data="d", link=link, event_type=m.EventType.ACCEPTED, session_id="373305033"
        ),
        m.ChatSessionInvitationNotification(
            originator_address="tel:+15551230001", subject="Hi", session_id="s1", link=link
        ),
        m.ChatMessageStatusNotification(
            link=link, status=m.MessageStatus.DELIVERED, message_id="m1"
        ),
        m.GroupChatSessionInvitationNotification(session_id="g1", link=link, subject="Trip"),
        m.ChatParticipantStatusNotification(
            link=link,
            session_id="g1",
            participant=[
                m.ParticipantInformation(
                    address="tel:+15551230002", status=m.ParticipantStatus.CONNECTED
                )
            ],
        ),
    ]
    for note in samples:
        doc = note.document()
        assert list(doc) == [note.ROOT]
        assert m.parse_document(doc, type(note)) == note
    assert samples[0].to_json()["eventType"] == "Accepted"
    assert samples[4].to_json()["participant"][0] == {
        "address": "tel:+15551230002",
        "status": "Connected",
    }


def test_request_error_shape() -> None:
    body = {
        "requestError": {
            "serviceException": {"messageId": "SVC0002", "text": "t %1", "variables": ["state"]}
        }
    }
    err = m.parse_document(body, m.RequestError)
    assert err.service_exception is not None and err.document() == body
    with pytest.raises(ValidationError):
        m.RequestError.model_validate({})


def test_group_session_needs_participants() -> None:
    with pytest.raises(ValidationError):
        m.GroupChatSessionInformation.model_validate({"participant": []})
    with pytest.raises(ValidationError):
        m.ExtensionParameters.model_validate({"subject": "x"})
    info = m.GroupChatSessionInformation.model_validate(
        {"participant": [{"address": "+15551230002", "isOriginator": "false"}]}
    )
    assert info.participant[0].is_originator is False
    assert m.ParticipantList().to_json() == {"participant": []}


def test_json_response_writes_what_to_json_gives() -> None:
    import json
    from datetime import UTC, datetime

    from rest.body import json_response

    samples = [
        m.ChatMessage(text='h\u00e9llo "q"', report_request=[m.MessageStatus.DELIVERED]),
        m.ChatSessionInformation(
            originator_address="tel:+15551230001", t_participant_address="tel:+15551230002"
        ),
        m.ChatMessageNotification(
            session_id="s1",
            message_id="m1",
            sender_address="tel:+15551230001",
            chat_message=m.ChatMessage(text="x"),
            date_time=datetime(2026, 11, 25, 12, 0, 1, 500000, tzinfo=UTC),
            link=[{"rel": "ChatSessionInformation", "href": "http://x/s"}],
        ),
    ]
    for model in samples:
        resp = json_response("root", model)
        assert resp.body is not None and isinstance(resp.body, bytes)
        assert json.loads(resp.body) == {"root": model.to_json()}
