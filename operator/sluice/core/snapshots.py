"""The safety net (contract rule 18): pure decisions about VolumeSnapshots.

Take: with `spec.storage.snapshotBeforeClear`, a clear snapshots each claim and deletes
nothing until every snapshot is readyToUse (`decide.py` asks here at the point where it
would delete claims). Expire: each snapshot is deleted once `retainFor` has passed, also
after its Pipeline is gone. Restore: `spec.storage.restoreFrom` makes the next claim
restore from a snapshot, or says why it cannot.

No I/O and no clock: the observed snapshots and `now` come in, actions and records go out.
"""

from __future__ import annotations

# ---- take and expire -----------------------------------------------------------------


# ---- restore -------------------------------------------------------------------------
