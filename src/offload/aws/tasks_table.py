"""Task records in DynamoDB (the TasksTable), expired by TTL: each task's status and its claim.

One item per task. Enqueueing writes none (the task id proves its owner: offload.task_ids);
a worker writes two per run of a task: the claim (`running`, with a lease and a claim token)
and the outcome, conditional on that token. Every write appends one entry to the task's
`history` (state, time, attempt, error ≤ 300 characters). The history stays bounded: a message
is received at most MaxReceiveCount times (12), each receive writes at most two entries, and a
restart (requeue_dead: a redrive or a retry) keeps only the last HISTORY_KEPT.
"""

import base64
import binascii
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from offload.models import MAX_HISTORY_ERROR, TaskRecord, TaskState, Transition, utcnow
from offload.task_ids import issued_at, issued_to

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

# No Lambda invocation runs longer: the lease of a claim whose caller gave none.
MAX_LAMBDA_SECONDS = 900
# The most history entries a restarted task keeps (requeue_dead).
HISTORY_KEPT = 20
# The longest error a record keeps.
MAX_ERROR = 4000
# States a claim may move to `running`: the task has not started, or must run again.
CLAIMABLE = (TaskState.QUEUED, TaskState.SCHEDULED, TaskState.RETRYING)
# States a cancel may move to `cancelled`.
CANCELLABLE = (TaskState.QUEUED, TaskState.SCHEDULED, TaskState.RETRYING)
# The listing index (template.yaml): by_owner (listing, listed_at), where `listing` is the
# task's owner (prefixed) or NO_OWNER, and listed_at its issue time (or its first write) and id.
# Both are written once, by the record's first write, so its later writes never touch the index
# (it projects keys only): one index write per task.
BY_OWNER = "by_owner"
NO_OWNER = "none"
MAX_LIST_LIMIT = 100
# A filtered listing reads at most this many records per page, matching or not.
MAX_EXAMINED = 1000
MAX_CURSOR_CHARS = 512
# The largest message a dead task keeps for POST /tasks/{id}/retry (an item holds 400 KB).
MAX_KEPT_MESSAGE = 256 * 1024


class InvalidCursorError(ValueError):
    """A listing cursor that this table did not hand out."""


def listing_key(owner: str | None) -> str:
    """The listing index's partition of `owner`'s tasks (NO_OWNER: the tasks without one)."""
    return f"owner:{owner}" if owner else NO_OWNER


def listed_at(task_id: UUID, created: datetime) -> str:
    """The listing indexes' sort key: newest first is descending order."""
    when = issued_at(task_id) or created
    return f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}#{task_id}"


def encode_cursor(item: "Mapping[str, AttributeValueTypeDef]") -> str:
    position = {"t": item["listed_at"]["S"], "i": item["task_id"]["S"]}
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """(listed_at, task_id) of a cursor; InvalidCursorError if it is not one of ours."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
        task_id, at = str(UUID(position["i"])), position["t"]
        if not (isinstance(at, str) and at.endswith(f"#{task_id}")):
            raise ValueError("not a position")
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise InvalidCursorError("not a cursor from a previous page") from exc
    return at, task_id


@dataclass(frozen=True)
class Claim:
    """What claim() found: the task is this delivery's to run now (`token` proves it), or why
    not, from the task as it stood."""

    taken: bool
    token: str | None = None
    # Refused: the state the task was in (None if it vanished meanwhile).
    state: TaskState | None = None
    # Refused because another origin claimed the task first: that origin.
    other_origin: str | None = None
    # Refused because another delivery holds the task: seconds left on its lease.
    held_seconds: float | None = None


def _s(value: str) -> "AttributeValueTypeDef":
    return {"S": value}


def _entry(
    state: TaskState, now: datetime, attempt: int = 0, error: str | None = None
) -> "AttributeValueTypeDef":
    entry: dict[str, AttributeValueTypeDef] = {
        "state": _s(state.value),
        "at": _s(now.isoformat()),
        "attempt": {"N": str(attempt)},
    }
    if error is not None:
        entry["error"] = _s(error[:MAX_HISTORY_ERROR])
    return {"M": entry}


def _transition(item: "AttributeValueTypeDef") -> Transition:
    entry = item["M"]
    return Transition(
        state=TaskState(entry["state"]["S"]),
        at=datetime.fromisoformat(entry["at"]["S"]),
        attempt=int(entry.get("attempt", {}).get("N", "0")),
        error=entry["error"]["S"] if "error" in entry else None,
    )


class _Update:
    """One UpdateItem's expression, built clause by clause; every write appends a history
    entry and moves `updated_at` and the TTL."""

    def __init__(
        self,
        table: "TasksTable",
        state: TaskState,
        now: datetime,
        attempt: int = 0,
        error: str | None = None,
    ) -> None:
        self.names: dict[str, str] = {"#state": "state", "#history": "history"}
        self.values: dict[str, AttributeValueTypeDef] = {
            ":state": _s(state.value),
            ":now": _s(now.isoformat()),
            ":expires": {"N": table.expires_at(now)},
            ":empty": {"L": []},
            ":entry": {"L": [_entry(state, now, attempt, error)]},
        }
        self.sets = [
            "#state = :state",
            "updated_at = :now",
            "created_at = if_not_exists(created_at, :now)",
            "expires_at = :expires",
            "#history = list_append(if_not_exists(#history, :empty), :entry)",
        ]
        self.removes: list[str] = []

    def set(self, attribute: str, value: "AttributeValueTypeDef", *, keep: bool = False) -> None:
        """SET attribute (or only if it has none, with keep)."""
        self.names[f"#{attribute}"] = attribute
        self.values[f":{attribute}"] = value
        expression = f"if_not_exists(#{attribute}, :{attribute})" if keep else f":{attribute}"
        self.sets.append(f"#{attribute} = {expression}")

    def remove(self, *attributes: str) -> None:
        for attribute in attributes:
            self.names[f"#{attribute}"] = attribute
            self.removes.append(f"#{attribute}")

    def expression(self) -> str:
        text = "SET " + ", ".join(self.sets)
        return text + (" REMOVE " + ", ".join(self.removes) if self.removes else "")


class TasksTable:
    """The TasksTable: `name` in DynamoDB through `client`. Records expire `ttl_days` after their
    last write; a task on its queue's last receive (`max_receive_count`) reads as dead."""

    def __init__(
        self, client: "DynamoDBClient", name: str, *, ttl_days: int, max_receive_count: int
    ) -> None:
        self.client = client
        self.name = name
        self.ttl_days = ttl_days
        self.max_receive_count = max_receive_count

    def expires_at(self, now: datetime) -> str:
        return str(int((now + timedelta(days=self.ttl_days)).timestamp()))

    def _key(self, task_id: UUID) -> dict[str, "AttributeValueTypeDef"]:
        return {"task_id": _s(str(task_id))}

    def _write(
        self, task_id: UUID, update: _Update, condition: str, *, old_on_refusal: bool = False
    ) -> tuple[bool, dict[str, Any] | None]:
        """Run the update under `condition`: (True, None), or (False, the item as it stood if
        asked and it exists). A record's first write puts it in the listing index."""
        owner = update.values.get(":owner", {}).get("S")
        update.set("listing", _s(listing_key(owner)), keep=True)
        update.set("listed_at", _s(listed_at(task_id, utcnow())), keep=True)
        try:
            self.client.update_item(
                TableName=self.name,
                Key=self._key(task_id),
                UpdateExpression=update.expression(),
                ConditionExpression=condition,
                ExpressionAttributeNames=update.names,
                ExpressionAttributeValues=update.values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD" if old_on_refusal else "NONE",
            )
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            item: dict[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
            return False, item
        return True, None

    # ------------------------------------------------------------ before a worker
    def create(self, task_id: UUID, kind: str, owner: str | None = None) -> bool:
        """Record a task as queued, for an id that cannot vouch for it (offload.enqueue) or a
        task run in-process. False if the task is recorded already.

        A task whose enqueue failed (see not_enqueued) is queued afresh: an Idempotency-Key
        retry reuses its id. `owner` is the caller's subject (the JWT `sub`).
        """
        update = _Update(self, TaskState.QUEUED, utcnow())
        update.set("kind", _s(kind))
        update.set("attempts", {"N": "0"}, keep=True)
        if owner:
            update.set("owner", _s(owner), keep=True)
        update.remove("not_enqueued", "error")
        condition = "attribute_not_exists(task_id) OR #not_enqueued = :true"
        update.values[":true"] = {"BOOL": True}
        return self._write(task_id, update, condition)[0]

    def not_enqueued(self, task_id: UUID, kind: str, owner: str | None, reason: str) -> bool:
        """Record that SQS refused the task's message: `failed` with "not enqueued: <reason>",
        flagged so that a later send of the same id (an Idempotency-Key retry) is still claimed
        by its worker. Never touches a task a worker recorded (False then)."""
        update = _Update(self, TaskState.FAILED, utcnow(), error=f"not enqueued: {reason}")
        update.set("kind", _s(kind))
        update.set("attempts", {"N": "0"}, keep=True)
        update.set("error", _s(f"not enqueued: {reason}"[:MAX_ERROR]))
        update.set("not_enqueued", {"BOOL": True})
        if owner:
            update.set("owner", _s(owner), keep=True)
        update.values[":queued"] = _s(TaskState.QUEUED.value)
        update.values[":scheduled"] = _s(TaskState.SCHEDULED.value)
        condition = (
            "attribute_not_exists(task_id) OR #state IN (:queued, :scheduled)"
            " OR #not_enqueued = :flag"
        )
        update.values[":flag"] = {"BOOL": True}
        return self._write(task_id, update, condition)[0]

    def create_scheduled(
        self,
        task_id: UUID,
        kind: str,
        owner: str | None,
        run_at: datetime,
        schedule_name: str | None = None,
    ) -> bool:
        """Record a new task as `scheduled` to run at `run_at` (by a delayed message, or by the
        one-time schedule `schedule_name`). False if the task is recorded already."""
        update = _Update(self, TaskState.SCHEDULED, utcnow())
        update.set("kind", _s(kind))
        update.set("attempts", {"N": "0"})
        update.set("run_at", _s(run_at.astimezone(UTC).isoformat()))
        if schedule_name:
            update.set("schedule_name", _s(schedule_name))
        if owner:
            update.set("owner", _s(owner))
        return self._write(task_id, update, "attribute_not_exists(task_id)")[0]

    def cancel(
        self, task_id: UUID, owner_subject: str | None, *, kind: str | None = None
    ) -> tuple[bool, TaskState | None]:
        """Cancel a task that has not started: (True, CANCELLED) if it was queued, scheduled or
        retrying, or had no record yet and its id was issued to `owner_subject` (the record is
        then created, `kind` if given); (False, its state) if it is running or finished; (False,
        None) if there is no such task for `owner_subject` (another caller's: hidden). One
        conditional write; its refusal returns the task as it stood."""
        update = _Update(self, TaskState.CANCELLED, utcnow())
        update.remove("lease_expires_at", "claim_token", "not_enqueued")
        update.set("kind", _s(kind or "unknown"), keep=True)
        update.set("attempts", {"N": "0"}, keep=True)
        if owner_subject:
            update.set("owner", _s(owner_subject), keep=True)
        for index, state in enumerate(CANCELLABLE):
            update.values[f":c{index}"] = _s(state.value)
        update.names["#owner"] = "owner"
        if owner_subject:
            update.values[":owner"] = _s(owner_subject)
            owned = "(attribute_not_exists(#owner) OR #owner = :owner)"
        else:
            owned = "attribute_not_exists(#owner)"
        if issued_at(task_id) is not None and not issued_to(task_id, owner_subject):
            # Another caller's id: only a record that names this caller as owner is theirs.
            if not owner_subject:
                return False, None
            owned = "#owner = :owner"
        cancellable = ", ".join(f":c{i}" for i in range(len(CANCELLABLE)))
        condition = f"#state IN ({cancellable}) AND {owned}"
        if issued_to(task_id, owner_subject):
            condition = f"attribute_not_exists(task_id) OR ({condition})"
        done, old = self._write(task_id, update, condition, old_on_refusal=True)
        if done:
            return True, TaskState.CANCELLED
        if old is None:
            return False, None
        record = self._record(old)
        if not record.visible_to(owner_subject):
            return False, None
        return False, record.state

    # ------------------------------------------------------------ a worker's two writes
    def claim(
        self,
        task_id: UUID,
        kind: str,
        *,
        attempts: int,
        lease_seconds: float,
        owner: str | None = None,
        origin: str | None = None,
    ) -> Claim:
        """Make the task this delivery's to run: `running`, leased for `lease_seconds` (the
        invocation's time left), under a fresh claim token. One conditional write, no read.

        Taken if the task has no record yet, is queued, scheduled or retrying, failed only
        because its message was not enqueued, or is running under a lease that expired (its
        worker stopped). Refused, and told from the task as it stood (ALL_OLD): finished or
        cancelled (a duplicate: drop it); running under a live lease (held: `held_seconds`);
        claimed from another origin (what the call was built from, such as an S3 object's key:
        the first origin to claim a task is the only one that may ever run it). `owner` (from
        the message) is written only if the record has none.
        """
        now = utcnow()
        token = secrets.token_hex(8)
        update = _Update(self, TaskState.RUNNING, now, attempts)
        update.set("kind", _s(kind))
        update.set("attempts", {"N": str(attempts)})
        update.set("lease_expires_at", {"N": f"{now.timestamp() + max(lease_seconds, 0):.3f}"})
        update.set("claim_token", _s(token))
        update.remove("not_enqueued")
        if owner:
            update.set("owner", _s(owner), keep=True)
        values = update.values
        for index, state in enumerate(CLAIMABLE):
            values[f":c{index}"] = _s(state.value)
        values[":running"] = _s(TaskState.RUNNING.value)
        values[":failed"] = _s(TaskState.FAILED.value)
        values[":flag"] = {"BOOL": True}
        values[":at"] = {"N": f"{now.timestamp():.3f}"}
        update.names["#not_enqueued"] = "not_enqueued"
        condition = (
            "(attribute_not_exists(task_id)"
            f" OR #state IN ({', '.join(f':c{i}' for i in range(len(CLAIMABLE)))})"
            " OR (#state = :failed AND #not_enqueued = :flag)"
            " OR (#state = :running AND #lease_expires_at < :at))"
        )
        if origin is not None:
            update.set("origin", _s(origin), keep=True)
            condition += " AND (attribute_not_exists(#origin) OR #origin = :origin)"
        taken, old = self._write(task_id, update, condition, old_on_refusal=True)
        if taken:
            return Claim(taken=True, token=token)
        if old is None:  # removed between the check and now: come back shortly
            return Claim(taken=False, held_seconds=0.0)
        state = TaskState(old["state"]["S"])
        other = old.get("origin", {}).get("S")
        if state.is_final and "not_enqueued" not in old:
            return Claim(taken=False, state=state)
        if origin is not None and other not in (None, origin):
            return Claim(taken=False, state=state, other_origin=other)
        lease = float(old.get("lease_expires_at", {}).get("N", "0"))
        return Claim(taken=False, state=state, held_seconds=max(0.0, lease - now.timestamp()))

    def finish(
        self,
        task_id: UUID,
        token: str,
        state: TaskState,
        *,
        attempts: int,
        error: str | None = None,
        result: Any = None,
        message: str | None = None,
        queue: str | None = None,
    ) -> bool:
        """Record the outcome of a claimed run: succeeded (with its result), failed, retrying or
        dead. Conditional on the claim token: False if the claim was lost (its lease expired and
        another delivery took the task), and the record is left to its new holder.

        A dead task keeps its `message` (the SQS body, if at most MAX_KEPT_MESSAGE bytes) and
        its `queue`: POST /tasks/{id}/retry sends it again (see dead_message)."""
        update = _Update(self, state, utcnow(), attempts, error)
        if (
            state is TaskState.DEAD
            and message is not None
            and queue is not None
            and len(message.encode()) <= MAX_KEPT_MESSAGE
        ):
            update.set("dead_message", _s(message))
            update.set("dead_queue", _s(queue))
        update.set("attempts", {"N": str(attempts)})
        update.remove("lease_expires_at", "claim_token")
        if error is not None:
            update.set("error", _s(error[:MAX_ERROR]))
        elif state is TaskState.SUCCEEDED:
            update.remove("error")
        if result is not None:
            update.set("result", _s(json.dumps(result, default=str)))
        update.values[":token"] = _s(token)
        return self._write(task_id, update, "#claim_token = :token")[0]

    # ------------------------------------------------------------ restarting
    def requeue_dead(self, record: TaskRecord) -> bool:
        """Put a dead task back to `queued` (a redrive, a retry). False if it changed since it
        was read.

        `record` is the task as get() read it, and must be dead. The write requires the stored
        task to be unchanged since (same `updated_at`) and dead, or the running claim that get()
        reads as dead: so a task that finished meanwhile, succeeded or failed, is never reset.
        Its history keeps the last HISTORY_KEPT entries, the reason it died among them.
        """
        if record.state is not TaskState.DEAD:
            raise ValueError(f"task {record.task_id} is {record.state}, not dead")
        now = utcnow()
        history = list(record.history)
        if not history or history[-1].state is not TaskState.DEAD:
            # Read as dead (its worker stopped on the last receive): say so, with the reason.
            error = (record.error or "")[:MAX_HISTORY_ERROR] or None
            history.append(
                Transition(state=TaskState.DEAD, at=now, attempt=record.attempts, error=error)
            )
        history = history[-(HISTORY_KEPT - 1) :]
        kept = [_entry(t.state, t.at, t.attempt, t.error) for t in history]
        kept.append(_entry(TaskState.QUEUED, now))
        try:
            self.client.update_item(
                TableName=self.name,
                Key=self._key(record.task_id),
                UpdateExpression=(
                    "SET #state = :queued, updated_at = :now, expires_at = :expires,"
                    " #history = :history REMOVE #error, lease_expires_at, claim_token"
                ),
                ConditionExpression="updated_at = :seen AND #state IN (:dead, :running)",
                ExpressionAttributeNames={
                    "#state": "state",
                    "#error": "error",
                    "#history": "history",
                },
                ExpressionAttributeValues={
                    ":queued": _s(TaskState.QUEUED.value),
                    ":now": _s(now.isoformat()),
                    ":expires": {"N": self.expires_at(now)},
                    ":seen": _s(record.updated_at.isoformat()),
                    ":dead": _s(TaskState.DEAD.value),
                    ":running": _s(TaskState.RUNNING.value),
                    ":history": {"L": kept},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # ------------------------------------------------------------ reading
    def dead_message(self, task_id: UUID) -> tuple[str, str] | None:
        """The queue and SQS body a dead task was delivered with, if it kept them (finish)."""
        item = self.client.get_item(
            TableName=self.name,
            Key=self._key(task_id),
            ConsistentRead=True,
            ProjectionExpression="dead_message, dead_queue",
        ).get("Item", {})
        if "dead_message" not in item or "dead_queue" not in item:
            return None
        return str(item["dead_queue"]["S"]), str(item["dead_message"]["S"])

    def get(self, task_id: UUID) -> TaskRecord | None:
        """The task's status, as GET /tasks/{task_id} shows it (see TaskRecord.as_of)."""
        response = self.client.get_item(
            TableName=self.name, Key=self._key(task_id), ConsistentRead=True
        )
        item = response.get("Item")
        if item is None:
            return None
        return self._record(dict(item)).as_of(utcnow(), self.max_receive_count)

    @staticmethod
    def _record(item: dict[str, Any]) -> TaskRecord:
        def text(name: str) -> str | None:
            value = item.get(name, {}).get("S")
            return str(value) if value is not None else None

        lease = item.get("lease_expires_at", {}).get("N")
        run_at = text("run_at")
        result = text("result")
        return TaskRecord(
            task_id=UUID(item["task_id"]["S"]),
            kind=text("kind"),
            state=TaskState(item["state"]["S"]),
            attempts=int(item.get("attempts", {}).get("N", "0")),
            created_at=datetime.fromisoformat(item["created_at"]["S"]),
            updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
            error=text("error"),
            result=json.loads(result) if result is not None else None,
            owner=text("owner"),
            lease_expires_at=datetime.fromtimestamp(float(lease), UTC) if lease else None,
            run_at=datetime.fromisoformat(run_at) if run_at else None,
            schedule_name=text("schedule_name"),
            history=[_transition(entry) for entry in item.get("history", {}).get("L", [])],
        )

    def list(
        self,
        owner: str | None,
        *,
        state: TaskState | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """`owner`'s tasks (the tasks without an owner if None), newest first: one page of at
        most `limit` (1 to 100), and the cursor of the next page (None after the last).

        A Query on a listing index (keys only), then one BatchGetItem per page of keys. With
        `state` or `kind`, a page reads at most MAX_EXAMINED records: it may hold fewer than
        `limit` tasks and still have a next page. InvalidCursorError for a cursor that this
        method did not return.
        """
        limit = max(1, min(limit, MAX_LIST_LIMIT))
        index, key_name, key_value = BY_OWNER, "listing", listing_key(owner)
        partition: dict[str, AttributeValueTypeDef] = {key_name: {"S": key_value}}
        start: dict[str, AttributeValueTypeDef] | None = None
        if cursor is not None:
            at, task_id = decode_cursor(cursor)
            start = {"task_id": {"S": task_id}, "listed_at": {"S": at}, **partition}
        found: list[TaskRecord] = []
        examined = 0
        while True:
            query: dict[str, Any] = {
                "TableName": self.name,
                "IndexName": index,
                "KeyConditionExpression": "#key = :key",
                "ExpressionAttributeNames": {"#key": key_name},
                "ExpressionAttributeValues": {":key": {"S": key_value}},
                "ScanIndexForward": False,
                "Limit": min(limit - len(found), MAX_EXAMINED - examined),
            }
            if start is not None:
                query["ExclusiveStartKey"] = start
            page = self.client.query(**query)
            keys = page.get("Items", [])
            records = self._batch_get([k["task_id"]["S"] for k in keys])
            for position, key in enumerate(keys):
                examined += 1
                record = records.get(key["task_id"]["S"])
                if record is not None and record.matches(state, kind) and record.visible_to(owner):
                    found.append(record)
                if len(found) == limit or examined == MAX_EXAMINED:
                    last_of_all = position == len(keys) - 1 and "LastEvaluatedKey" not in page
                    return found, None if last_of_all else encode_cursor(key)
            start = page.get("LastEvaluatedKey")
            if start is None:
                return found, None

    def _batch_get(self, task_ids: "Sequence[str]") -> dict[str, TaskRecord]:
        """The records of these tasks (at most 100), by id; those that are gone are left out."""
        found: dict[str, TaskRecord] = {}
        keys: Sequence[Mapping[str, AttributeValueTypeDef]] = [
            {"task_id": {"S": task_id}} for task_id in dict.fromkeys(task_ids)
        ]
        while keys:
            response = self.client.batch_get_item(
                RequestItems={self.name: {"Keys": keys, "ConsistentRead": True}}
            )
            for item in response.get("Responses", {}).get(self.name, []):
                record = self._record(dict(item)).as_of(utcnow(), self.max_receive_count)
                found[item["task_id"]["S"]] = record
            unprocessed = response.get("UnprocessedKeys", {}).get(self.name)
            keys = list(unprocessed["Keys"]) if unprocessed else []
        return found
