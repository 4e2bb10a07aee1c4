"""Task ids that prove who they were issued to, so that enqueueing needs no DynamoDB write.

A task id is a UUIDv8 (RFC 9562):

    48 bits  unix time of issue, in milliseconds (0: no issue time, see `seed`)
     4 bits  version (8)
    12 bits  random
     2 bits  variant (10)
    30 bits  random
    32 bits  checksum: sha256 of the bits above and the owner (the caller's JWT `sub`, or none)

The API answers 202 with an id before any record of the task exists (only its SQS message
does); until a worker claims the task, GET /tasks/{id} answers `queued` to the caller the id
was issued to, and 404 to anyone else (offload.status). The checksum carries no key, and needs
none: all it decides is whether a task with no record yet answers `queued` or 404 to a caller.
Anyone can compute it, but only for ids they choose themselves: an id cannot be moved to
another owner without changing the id, so nobody learns anything about another caller's task,
nor reaches it. A task that has a record is authorized by the record's owner, never by its id.
A forged id is worth a `queued` answer about a task that does not exist, to its forger only.

Ids made elsewhere (uuid4, an Idempotency-Key's seeded ids) have no issue time or prove no
owner: those tasks get a `queued` record when they are enqueued (offload.enqueue), as before.
"""

import hashlib
import os
from datetime import UTC, datetime
from uuid import RFC_4122, UUID

_VERSION = 8
_TIME_BITS, _CHECK_BITS = 48, 32
_DOMAIN = b"offload-task-id\x00"


def _checksum(unix_ms: int, random_a: int, random_b: int, owner: str | None) -> int:
    who = b"\x00" if owner is None else b"\x01" + owner.encode()
    body = unix_ms.to_bytes(6, "big") + random_a.to_bytes(2, "big") + random_b.to_bytes(4, "big")
    digest = hashlib.sha256(_DOMAIN + body + who).digest()
    return int.from_bytes(digest[:4], "big")


def _fields(task_id: UUID) -> tuple[int, int, int, int]:
    value = task_id.int
    unix_ms = value >> 80
    random_a = (value >> 64) & 0x0FFF
    random_b = (value >> _CHECK_BITS) & ((1 << 30) - 1)
    return unix_ms, random_a, random_b, value & ((1 << _CHECK_BITS) - 1)


def new_task_id(owner: str | None, seed: bytes | None = None) -> UUID:
    """A new task id, issued now to `owner` (a JWT `sub`; None: no owner).

    With a `seed`, the id is the same for the same seed and owner: its random bits come from the
    seed, and it carries no issue time (a retry must get the same id, whenever it comes).
    """
    if seed is None:
        unix_ms = datetime.now(UTC).timestamp() * 1000
        random = int.from_bytes(os.urandom(6), "big")
    else:
        unix_ms = 0
        digest = hashlib.sha256(b"offload-task-id-seed\x00" + seed).digest()
        random = int.from_bytes(digest[:6], "big")
    ms = int(unix_ms) & ((1 << _TIME_BITS) - 1)
    random_a, random_b = (random >> 30) & 0x0FFF, random & ((1 << 30) - 1)
    value = (
        (ms << 80)
        | (_VERSION << 76)
        | (random_a << 64)
        | (0b10 << 62)
        | (random_b << _CHECK_BITS)
        | _checksum(ms, random_a, random_b, owner)
    )
    return UUID(int=value)


def issued_to(task_id: UUID, owner: str | None) -> bool:
    """Whether `task_id` was made by new_task_id for `owner` (never for a uuid4)."""
    if task_id.version != _VERSION or task_id.variant != RFC_4122:
        return False
    unix_ms, random_a, random_b, check = _fields(task_id)
    return check == _checksum(unix_ms, random_a, random_b, owner)


def issued_at(task_id: UUID) -> datetime | None:
    """When new_task_id made `task_id`; None for an id that carries no issue time."""
    if task_id.version != _VERSION:
        return None
    unix_ms = _fields(task_id)[0]
    return datetime.fromtimestamp(unix_ms / 1000, UTC) if unix_ms else None
