"""Operations: Prometheus metrics, readiness, event-loop lag and the log set-up (issue 12;
docs/operations.md). Built in ``bridge.app`` (logs in ``bridge.cli``) and handed down."""
