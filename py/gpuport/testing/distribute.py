"""pytest-xdist: a browser lane's tests go to one worker, so each worker launches only the browsers of its own
lanes and loads each lane's page once (`-n N` with xdist's default `--dist load`; any other `--dist` the user
gives is left as it is). The native lane has no browser: its tests spread like any others.

xdist's controller sees node ids only, so a test's lane is read from its id, which the plugin's
parametrization ends with the lane (`test_x[chromium]`, `test_y[0.5-firefox]`); tests of no lane are
spread one by one as `--dist load` would."""

from __future__ import annotations

from typing import Any

try:  # optional: without pytest-xdist there is nothing to schedule
    from xdist.scheduler import LoadScopeScheduling
except ImportError:
    LoadScopeScheduling = None


def lane_of(nodeid: str, lanes: list[str]) -> str | None:
    """The lane a node id ends with (the longest match: `chromium-cpu` before `chromium`), or None."""
    for lane in sorted(lanes, key=len, reverse=True):
        if nodeid.endswith((f"[{lane}]", f"-{lane}]")):
            return lane
    return None


def scheduler(config: Any, log: Any, lanes: list[str]) -> Any:
    """xdist's scope scheduling with a lane as the scope (None where xdist is absent)."""
    if LoadScopeScheduling is None:
        return None

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            lane = lane_of(nodeid, lanes)
            return f"gpuport-lane:{lane}" if lane is not None else nodeid

    return LaneScheduling(config, log)
