"""Independent test peers: the pjsua2 pager peer and a lossy UDP relay."""
