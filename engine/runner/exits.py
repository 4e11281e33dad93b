"""Exit codes of the stage worker (`python -m engine.runner.worker`) and the run driver (`engine.runner.supervisor`).

The driver ends with the code of the stage that stopped it, in the worker's words, so one table reads both.
"""

from __future__ import annotations

from enum import IntEnum

from engine.store import StageStatus


class WorkerExit(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2  # bad command line
    CANCELLED = 3
    NOT_MINE = 4  # its attempt is not this process's to run (ended, reset or taken meanwhile): nothing was touched
    DISK_FULL = 75  # the disk filled up and even the final status could not be written: the driver records it


class DriverExit(IntEnum):
    OK = 0  # every stage it drove succeeded or was skipped
    FAILED = WorkerExit.FAILED  # a stage failed or crashed
    CANCELLED = WorkerExit.CANCELLED  # a stage was cancelled
    ANOTHER_DRIVER = 4  # the run has another live driver; this one left it alone


def driver_exit(status: str) -> DriverExit | None:
    """None to go on to the next stage; else the driver's exit code for a stage that ended as `status`."""
    if status in (StageStatus.SUCCEEDED, StageStatus.SKIPPED):
        return None
    return DriverExit.CANCELLED if status == StageStatus.CANCELLED else DriverExit.FAILED
