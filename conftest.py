"""How `make test`'s two pytest-xdist workers share the suite (``-n 2 --dist loadfile``).

A test file goes to one worker, so its module fixtures are built once, except that:

* the notebooks form one group, run in order by one worker: notebook 04 reads the experiment
  that notebook 03 trains;
* the files of slow multi-process tests (DDP, parallel experiments, platforms) hand out their
  tests one by one, so that neither worker is left with all of them at the end.
"""

from __future__ import annotations

import pytest

#: Files whose tests are scheduled one by one: they have no module-scoped fixture to rebuild.
ONE_BY_ONE = ("tests/test_distributed.py", "tests/test_comparisons.py",
              "tests/test_platforms.py")


@pytest.hookimpl(optionalhook=True)         # pytest without xdist runs everything in order
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("notebooks/"):
                return "notebooks"
            if nodeid.startswith(ONE_BY_ONE):
                return nodeid
            return super()._split_scope(nodeid)
    return Scheduling(config, log)
