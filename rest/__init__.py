"""The REST side: aiohttp routes, pydantic models, OMA faults, notification delivery."""
