"""Named crash points, for the crash-safety tests (contract rule 14).

`SLUICE_FAILPOINTS=after-clearing-written,...` makes the operator kill itself
with SIGKILL the first time it passes one of those points: the same as a node
dying there, with no cleanup and no chance to finish the step.
"""

from __future__ import annotations

import os
import signal

AFTER_CLEARING_WRITTEN = "after-clearing-written"
AFTER_FIRST_CLAIM_DELETE = "after-first-claim-delete"
BEFORE_CLEARED_WRITTEN = "before-cleared-written"
AFTER_CLEARED_WRITTEN = "after-cleared-written"  # before anything else: its Event must be out
WHILE_WAITING_FOR_VOLUME = "while-waiting-for-volume"
AFTER_SNAPSHOTS_READY = "after-snapshots-ready"  # before the first claim is deleted/detached


def hit(name: str) -> None:
    armed = os.environ.get("SLUICE_FAILPOINTS", "").split(",")
    if name in armed:
        os.kill(os.getpid(), signal.SIGKILL)
