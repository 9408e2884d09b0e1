"""The SIP/MSRP side of chat: the signalling adapter over ``sip.stack`` and ``sip.msrp``.

Modules:
    payload   SDP offer/answer, CPIM chat messages, IMDNs, isComposing (pure)
    legs      Leg: one INVITE dialog and its MSRP session, with its state table
    base      SignallingBase: legs, ordered events, inbound MSRP and SIP MESSAGE
    sessions  SessionLegs: outgoing INVITEs, incoming invitations
    adapter   SipSignalling: ``bridge.chat.ports.SignallingPort`` over the stacks
    wiring    build the SIP stack, the MSRP stack and the adapter from Settings
"""
