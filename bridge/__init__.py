"""chat-bridge: the OMA RESTful Network API for Chat v1.0 over SIP/MSRP.

Packages: ``bridge`` (composition root, configuration, chat state machines),
``sip`` (SIP stack, MSRP, chat codecs), ``rest`` (aiohttp API), ``state``
(SQLAlchemy store).
"""

__version__ = "0.1.0"
