"""Identifiers that cross layers, as distinct types (docs/protocol-mapping.md "Identifiers")."""

from typing import NewType

UserUri = NewType("UserUri", str)
"""A user URI in canonical form: ``tel:+15551230001`` or ``sip:user@host``."""

SubscriptionId = NewType("SubscriptionId", str)
ChannelId = NewType("ChannelId", str)
ChatSessionId = NewType("ChatSessionId", str)
MessageId = NewType("MessageId", str)
"""REST messageId; equals the ``imdn.Message-ID`` for outgoing messages."""
NotificationId = NewType("NotificationId", int)
