"""1-1 chat between the REST API and SIP/MSRP (issue 4): state machines, service, notifications."""
