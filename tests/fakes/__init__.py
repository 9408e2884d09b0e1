"""Fakes of the bridge's ports for unit tests (fakes over mocks, docs/architecture.md "Tests")."""
