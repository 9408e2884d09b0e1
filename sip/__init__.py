"""Our asyncio SIP stack, the MSRP stack and the chat codecs.

Pure codecs and parsers (sans-I/O) import nothing from the other packages of
the project; only the transports touch asyncio sockets.
"""
