"""A record names the commit its run *started* on, even when commits land while it runs."""

import os
import subprocess
import time

from fedtl_helpers.workflow import provenance


def _commit(repo, stamp, name, text=None):
    (repo / name).write_text(name if text is None else text)
    env = {**os.environ, "GIT_AUTHOR_DATE": f"@{stamp} +0000", "GIT_COMMITTER_DATE": f"@{stamp} +0000",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "add", name], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", name], cwd=repo, check=True, env=env)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_head_at_reads_the_reflog_at_the_given_time(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    first = _commit(tmp_path, 1_000_000_000, "a")
    second = _commit(tmp_path, 1_000_000_100, "b")
    assert provenance.head_at(1_000_000_050, tmp_path) == first  # a run started between the two
    assert provenance.head_at(1_000_000_100, tmp_path) == second
    # a run launched by `git commit && python bench.py` starts in the commit's second, and /proc's
    # whole-second boot time can put its start up to a second before: still after the commit
    assert provenance.head_at(1_000_000_099, tmp_path) == second
    assert provenance.head_at(1_000_000_097, tmp_path) == first
    assert provenance.head_at(2_000_000_000, tmp_path) == second
    assert provenance.head_at(999_999_997, tmp_path) is None  # before any commit: unknown
    assert provenance.head_at(1_000_000_050, tmp_path / "nowhere") is None


def test_this_process_started_before_now_and_after_the_machine_booted():
    start = provenance.process_start_time()
    assert start <= time.time() + 1 and start > time.time() - 7 * 24 * 3600


def test_dirty_means_changed_before_the_run_started_not_while_it_ran(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    start = _commit(tmp_path, 1_000_000_000, "a")
    assert not provenance.dirty_at(start, 1_500_000_000, tmp_path)  # clean
    (tmp_path / "a").write_text("edited")
    os.utime(tmp_path / "a", (1_500_000_000, 1_500_000_000))
    assert provenance.dirty_at(start, 1_500_000_100, tmp_path)  # edited before the run: its code
    assert not provenance.dirty_at(start, 1_499_999_000, tmp_path)  # edited while it ran: not
    _commit(tmp_path, 1_600_000_000, "a", "edited")  # ... and committed later: still not the run's code
    os.utime(tmp_path / "a", (1_600_000_000, 1_600_000_000))
    assert not provenance.dirty_at(start, 1_500_000_100, tmp_path)
    (tmp_path / "a").unlink()  # gone: when cannot be told, so dirty
    assert provenance.dirty_at(start, 1_500_000_100, tmp_path)
