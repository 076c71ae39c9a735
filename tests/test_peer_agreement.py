"""``benchmarks/peer_agreement.py`` without a usable checkout of the peer: one line on stderr saying how to get
it, exit status 2, nothing imported from elsewhere (the comparison itself needs the peer and is not run here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_agreement.py"


def run_script(peer: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--peer", str(peer)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("broken", [False, True], ids=["missing", "import-fails"])
def test_without_the_peer_one_line_and_exit_2(tmp_path: Path, broken: bool) -> None:
    peer = tmp_path / "neural-collapse"
    if broken:  # a checkout whose package cannot be imported
        (peer / "neural_collapse").mkdir(parents=True)
        (peer / "neural_collapse" / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    result = run_script(peer)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "git clone https://github.com/rhubarbwu/neural-collapse" in lines[0]
    assert "checkout c05a0b8" in lines[0]
    assert ("broken on purpose" in lines[0]) == broken
