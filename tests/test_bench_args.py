"""The tuned benchmarks share one argument check (``benchmarks/_args.py``) and all apply it."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
TUNED = ("bench_strategies", "bench_dp", "bench_compression", "bench_robust")


@pytest.mark.parametrize("name", TUNED)
@pytest.mark.parametrize("bad", [["--last", "0"], ["--rounds", "2", "--last", "3"], ["--tune-rounds", "0"]])
def test_tuned_benchmarks_refuse_bad_rounds_before_any_work(name, bad):
    out = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *bad], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "need --rounds >= --last >= 1, --tune-rounds >= 1 and at least one seed" in out.stderr
