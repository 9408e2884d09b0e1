"""Parser cost: microseconds per KB of benign and worst-known hostile input (issue 13).

usage: python bench/parser_cost.py [--only SUBSTRING] [--repeat 3]

For every parser in tests/hostile_inputs.py, parses its benign input and each hostile
shape at 1, 10 and 100 KB and prints microseconds per KB (best of ``--repeat`` runs).
A linear parser shows a flat row; a quadratic one grows tenfold per column.  The outcome
column says how the 100 KB input ended: ``ok`` or the start of the CodecError message
(anything else is a bug and is printed as the exception type).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sip.errors import CodecError  # noqa: E402
from tests.hostile_inputs import CASES  # noqa: E402

SIZES = (1024, 10 * 1024, 100 * 1024)


def cost(parse: object, data: bytes, repeat: int) -> tuple[float, str]:
    """Best time of ``repeat`` parses, in seconds, and the outcome."""
    assert callable(parse)
    best = float("inf")
    outcome = "ok"
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            parse(data)
        except CodecError as exc:
            outcome = str(exc)[:44]
        except Exception as exc:  # noqa: BLE001 - reported, it is what the bench looks for
            outcome = f"!! {type(exc).__name__}"
        best = min(best, time.perf_counter() - start)
    return best, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'parser / input':56} {'1 KB':>9} {'10 KB':>9} {'100 KB':>9}  us/KB; outcome")
    for name, case in CASES.items():
        if args.only not in name:
            continue
        rows = [("benign", case.benign), *case.hostile.items()]
        for label, make in rows:
            cells = []
            outcome = ""
            for size in SIZES:
                data = make(size)
                seconds, outcome = cost(case.parse, data, args.repeat)
                cells.append(seconds * 1e6 / (len(data) / 1024))
            line = f"{name + ' / ' + label:56} " + " ".join(f"{c:9.1f}" for c in cells)
            print(f"{line}  {outcome}")


if __name__ == "__main__":
    main()
