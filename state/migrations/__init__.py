"""Numbered schema migrations ``mNNNN_<name>.py``; see ``state.db``.

Owners: m0001-m0009 REST core (subscriptions), m0010-m0019 notifications and
channels, m0020-m0029 chat sessions and messages, m0030-m0039 the conference focus,
m0040+ several instances on one store (issue 10).
"""
