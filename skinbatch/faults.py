"""Test-only fault switches: off in production.

The system tests need a consumer that misbehaves on cue (a decode that never ends, a process that dies
whenever one request is in flight, a main loop that stops turning). The switches are read from one
environment variable, ``SKINBATCH_TEST_FAULTS``, that only tests set::

    SKINBATCH_TEST_FAULTS="slow_decode=<sha256>,kill_in_flight=<request id>"

Unset (always, in production), every lookup answers None. The variable is read once, at import, in
each process (decode workers are spawned and inherit it).
"""

from __future__ import annotations

import logging
import os

from skinbatch.contract import ConfigurationError

ENV = "SKINBATCH_TEST_FAULTS"
SWITCHES = ("slow_decode", "hog_decode", "kill_in_flight", "wedge")
"""``slow_decode``/``hog_decode``: a decode of the input with this sha256 sleeps for an hour / allocates
memory until it fails; ``kill_in_flight``: the consumer SIGKILLs itself while the request with this id is
in flight; ``wedge``: the consumer's main loop blocks for good once it accepts the request with this id."""


def parse(text: str) -> dict[str, str]:
    """``name=value,name=value`` → a dict; unknown names are refused (a typo would test nothing)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in SWITCHES:
            raise ConfigurationError(f"{ENV}: unknown fault switch {name!r}; known: {', '.join(SWITCHES)}")
        out[name] = value
    return out


_ACTIVE: dict[str, str] = parse(os.environ.get(ENV, ""))
if _ACTIVE:
    logging.getLogger("skinbatch").warning("TEST FAULT SWITCHES ARE ON: %s", ", ".join(sorted(_ACTIVE)),
                                           extra={"event": "test_faults"})


def get(name: str) -> str | None:
    """The value of switch ``name``, or None (always None in production)."""
    return _ACTIVE.get(name)


__all__ = ["ENV", "SWITCHES", "get", "parse"]
