"""Fakes of the bridge's ports for unit tests (fakes over mocks, STYLE.md §10)."""
