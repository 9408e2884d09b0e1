"""Shared hypothesis strategies for the codec tests.

``mutated(sample)`` damages a captured wire sample the way a broken peer or a lossy path
would (byte flips, insertions, deletions, truncation), so each codec test can assert
that any input raises only CodecError or parses into something that serializes again.
"""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, sample: bytes) -> bytes:
    """Draw a copy of ``sample`` with one to six random byte-level edits."""
    data = bytearray(sample)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return bytes(data)
