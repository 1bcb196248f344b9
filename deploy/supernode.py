"""``flower-supernode`` with its two waits shortened: ``--idle-poll`` and ``--reply-poll`` seconds.

Chapter: "From simulation to deployment". Flower 1.42's SuperNode loop
(``flwr/supernode/start_client_internal.py``) has two hard-coded waits and no option for
either:

- after asking the SuperLink for a message and finding none, ``time.sleep(3)``: a message
  pushed by the ServerApp waits 1.5 s on average (up to 3 s) before the node even sees it;
- while its ClientApp works on a message, it looks for the reply every ``time.sleep(0.5)``:
  0.25 s more on average.

Over the internet, with rounds of minutes, neither matters, and a SuperNode should not ask a
remote SuperLink ten times a second. On one machine (``run_local.py``, the tests, the
benchmark) they are most of a round's overhead. This file runs Flower's own
``flower_supernode`` with exactly those sleeps shortened, by handing the loop's module a
``time`` whose ``sleep(3)`` and ``sleep(0.5)`` take the given seconds; every other call goes to
the real ``time``. The defaults are Flower's (3 and 0.5), so without the two options this is
``flower-supernode``. It refuses to start under another Flower version than the one pinned in
``requirements.txt``, or if the loop no longer has those two sleeps: a patch that silently
stopped applying would make the benchmark's figures lie.

Usage: ``python deploy/supernode.py --idle-poll 0.1 --reply-poll 0.05 <flower-supernode options>``
"""

from __future__ import annotations

import inspect
import sys
import time
from importlib.metadata import version

FLOWER = "1.42.0"  # the version whose loop this was written against (requirements.txt pins it)
IDLE_SLEEP, REPLY_SLEEP = 3, 0.5  # Flower's hard-coded waits, in seconds


class LoopClock:
    """``time`` as the SuperNode loop sees it: its two waits replaced, everything else real."""

    def __init__(self, idle_poll: float, reply_poll: float):
        self.waits = {IDLE_SLEEP: idle_poll, REPLY_SLEEP: reply_poll}

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(self.waits.get(seconds, seconds))


def patch_loop(idle_poll: float, reply_poll: float) -> None:
    """Shorten the SuperNode loop's waits, or exit with an error naming what does not match."""
    found = version("flwr")
    if found != FLOWER:
        sys.exit(f"deploy/supernode.py was written for flwr {FLOWER} and found {found}: its waits may "
                 f"have moved. Run flower-supernode itself (no --idle-poll/--reply-poll), or check "
                 f"flwr/supernode/start_client_internal.py and update FLOWER.")
    from flwr.supernode import start_client_internal as loop

    source = inspect.getsource(loop)
    missing = [s for s in (f"time.sleep({IDLE_SLEEP})", f"time.sleep({REPLY_SLEEP})") if s not in source]
    if missing:
        sys.exit(f"flwr/supernode/start_client_internal.py no longer calls {', '.join(missing)}: "
                 "deploy/supernode.py cannot shorten it.")
    loop.time = LoopClock(idle_poll, reply_poll)


def split_options(argv: list[str]) -> tuple[float, float, list[str]]:
    """``--idle-poll`` and ``--reply-poll`` (seconds, > 0) out of ``argv``; the rest for Flower."""
    polls = {"--idle-poll": float(IDLE_SLEEP), "--reply-poll": REPLY_SLEEP}
    rest, args = [], iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name not in polls:
            rest.append(arg)
            continue
        value = value if eq else next(args, "")
        try:
            polls[name] = float(value)
        except ValueError:
            sys.exit(f"{name}={value!r} is invalid: allowed a number of seconds > 0")
        if not 0 < polls[name] < float("inf"):
            sys.exit(f"{name}={value!r} is invalid: allowed a number of seconds > 0")
    return polls["--idle-poll"], polls["--reply-poll"], rest


def main() -> None:
    idle_poll, reply_poll, rest = split_options(sys.argv[1:])
    patch_loop(idle_poll, reply_poll)
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
