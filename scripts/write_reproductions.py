"""Write ``docs/reproductions.md`` and its figures from the sweeps of ``scripts/reproduce.sh``
(:mod:`ncdepth.report.reproductions`).

    python scripts/write_reproductions.py [OUT_DIR] [--docs DOCS_DIR]   # defaults: multirun/repro, docs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ncdepth.report.reproductions.page import write_page

REPO = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "multirun" / "repro")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    print(f"wrote {write_page(args.out, args.docs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
