"""Task status records in DynamoDB (the TasksTable), expired by TTL."""

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from offload.models import TaskRecord, TaskState, utcnow

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

FINAL_STATES = [s.value for s in TaskState if s.is_final]
# The listing indexes (template.yaml): by_owner (owner, listed_at) holds the tasks that have an
# owner; all_tasks (listing, listed_at) every task, under LISTING. listed_at is the task's
# creation time and id, written once, so that a record's later writes never touch the indexes.
BY_OWNER = "by_owner"
ALL_TASKS = "all_tasks"
LISTING = "task"
MAX_LIST_LIMIT = 100
# A filtered listing reads at most this many records per page, matching or not.
MAX_EXAMINED = 1000
MAX_CURSOR_CHARS = 512
# No Lambda invocation runs longer: the lease of a running claim whose caller gave none.
MAX_LAMBDA_SECONDS = 900


class InvalidCursorError(ValueError):
    """A listing cursor that this table did not hand out."""


def listed_at(task_id: UUID, created: datetime) -> str:
    """The listing indexes' sort key: newest first is descending order."""
    return f"{created.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}#{task_id}"


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
    """What claim() found: the task is this delivery's to run now, or why not."""

    taken: bool
    # Refused because another origin claimed the task first (otherwise: the task had finished).
    other_origin: str | None = None


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

    def _expires_at(self, now: datetime) -> str:
        return str(int((now + timedelta(days=self.ttl_days)).timestamp()))

    def create(self, task_id: UUID, kind: str, owner: str | None = None) -> bool:
        """Record a new task as queued. False if a worker has already recorded it.

        A task whose enqueue failed is queued afresh: an Idempotency-Key retry reuses its id.
        `owner` is the caller's subject (the JWT `sub`); only that caller may read the task.
        """
        now = utcnow()
        table = self.client
        item: dict[str, AttributeValueTypeDef] = {
            "task_id": {"S": str(task_id)},
            "kind": {"S": kind},
            "state": {"S": TaskState.QUEUED.value},
            "attempts": {"N": "0"},
            "created_at": {"S": now.isoformat()},
            "updated_at": {"S": now.isoformat()},
            "expires_at": {"N": self._expires_at(now)},
            "listing": {"S": LISTING},
            "listed_at": {"S": listed_at(task_id, now)},
        }
        if owner:
            item["owner"] = {"S": owner}
        try:
            table.put_item(
                TableName=self.name,
                Item=item,
                ConditionExpression="attribute_not_exists(task_id) OR #state = :failed",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":failed": {"S": TaskState.FAILED.value}},
            )
        except table.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def create_scheduled(
        self, task_id: UUID, kind: str, owner: str | None, run_at: datetime
    ) -> bool:
        """Record a new task as scheduled to run at `run_at`. False if it is recorded already."""
        now = utcnow()
        item: dict[str, AttributeValueTypeDef] = {
            "task_id": {"S": str(task_id)},
            "kind": {"S": kind},
            "state": {"S": TaskState.SCHEDULED.value},
            "attempts": {"N": "0"},
            "created_at": {"S": now.isoformat()},
            "updated_at": {"S": now.isoformat()},
            "run_at": {"S": run_at.isoformat()},
            "expires_at": {"N": self._expires_at(max(now, run_at))},
            "listing": {"S": LISTING},
            "listed_at": {"S": listed_at(task_id, now)},
        }
        if owner:
            item["owner"] = {"S": owner}
        try:
            self.client.put_item(
                TableName=self.name, Item=item, ConditionExpression="attribute_not_exists(task_id)"
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def transition(
        self,
        task_id: UUID,
        kind: str,
        state: TaskState,
        *,
        attempts: int | None = None,
        error: str | None = None,
        result: Any = None,
        owner: str | None = None,
        lease_seconds: float | None = None,
        origin: str | None = None,
    ) -> bool:
        """Move a task to `state`. Returns False if the task had already finished, or if `origin`
        is given and the task was first claimed from another origin (see claim()).

        A finished task (succeeded, failed or dead) never moves back (only requeue_dead does, for a
        redrive). A record that does not exist yet is created, so a message that did not come
        through the API still gets a status. A `running` claim holds a lease: how long its worker
        can still be running (the Lambda's time left; MAX_LAMBDA_SECONDS if not given). `owner`
        (from the message) is written only if the record has none, so a worker that writes before
        the API keeps the owner.
        """
        now = utcnow()
        names = {"#state": "state", "#kind": "kind"}
        values: dict[str, AttributeValueTypeDef] = {
            ":state": {"S": state.value},
            ":kind": {"S": kind},
            ":now": {"S": now.isoformat()},
            ":expires": {"N": self._expires_at(now)},
            ":listing": {"S": LISTING},
            ":listed_at": {"S": listed_at(task_id, now)},
        }
        sets = [
            "#state = :state",
            "#kind = :kind",
            "updated_at = :now",
            "created_at = if_not_exists(created_at, :now)",
            "expires_at = :expires",
            "listing = if_not_exists(listing, :listing)",
            "listed_at = if_not_exists(listed_at, :listed_at)",
        ]
        removes = []
        if state is TaskState.RUNNING:
            lease = MAX_LAMBDA_SECONDS if lease_seconds is None else lease_seconds
            sets.append("lease_expires_at = :lease")
            values[":lease"] = {"N": f"{now.timestamp() + max(lease, 0):.3f}"}
        else:
            removes.append("lease_expires_at")
        if attempts is not None:
            sets.append("attempts = :attempts")
            values[":attempts"] = {"N": str(attempts)}
        if error is not None:
            sets.append("#error = :error")
            names["#error"] = "error"
            values[":error"] = {"S": error[:4000]}
        elif state in (TaskState.SUCCEEDED, TaskState.QUEUED):
            removes.append("#error")
            names["#error"] = "error"
        if owner:
            sets.append("#owner = if_not_exists(#owner, :owner)")
            names["#owner"] = "owner"
            values[":owner"] = {"S": owner}
        if result is not None:
            sets.append("#result = :result")
            names["#result"] = "result"
            values[":result"] = {"S": json.dumps(result, default=str)}
        finals = ", ".join(f":f{index}" for index in range(len(FINAL_STATES)))
        condition = f"(attribute_not_exists(#state) OR NOT #state IN ({finals}))"
        if origin is not None:
            sets.append("#origin = if_not_exists(#origin, :origin)")
            names["#origin"] = "origin"
            values[":origin"] = {"S": origin}
            condition += " AND (attribute_not_exists(#origin) OR #origin = :origin)"
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        for index, final in enumerate(FINAL_STATES):
            values[f":f{index}"] = {"S": final}
        try:
            self.client.update_item(
                TableName=self.name,
                Key={"task_id": {"S": str(task_id)}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def requeue_dead(self, record: TaskRecord) -> bool:
        """Put a dead task back to `queued` (a redrive). False if it changed since it was read.

        `record` is the task as get() read it, and must be dead. The write requires the stored task
        to be unchanged since (same `updated_at`) and dead, or the running claim that get() reads as
        dead: so a task that finished meanwhile, succeeded or failed, is never reset.
        """
        if record.state is not TaskState.DEAD:
            raise ValueError(f"task {record.task_id} is {record.state}, not dead")
        now = utcnow()
        try:
            self.client.update_item(
                TableName=self.name,
                Key={"task_id": {"S": str(record.task_id)}},
                UpdateExpression=(
                    "SET #state = :queued, updated_at = :now, expires_at = :expires"
                    " REMOVE #error, lease_expires_at"
                ),
                ConditionExpression="updated_at = :seen AND #state IN (:dead, :running)",
                ExpressionAttributeNames={"#state": "state", "#error": "error"},
                ExpressionAttributeValues={
                    ":queued": {"S": TaskState.QUEUED.value},
                    ":now": {"S": now.isoformat()},
                    ":expires": {"N": self._expires_at(now)},
                    ":seen": {"S": record.updated_at.isoformat()},
                    ":dead": {"S": TaskState.DEAD.value},
                    ":running": {"S": TaskState.RUNNING.value},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get(self, task_id: UUID) -> TaskRecord | None:
        """The task's status, as GET /tasks/{task_id} shows it (see TaskRecord.as_of)."""
        response = self.client.get_item(
            TableName=self.name,
            Key={"task_id": {"S": str(task_id)}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return None if item is None else self._record(item)

    def _record(self, item: "Mapping[str, AttributeValueTypeDef]") -> TaskRecord:
        lease = item.get("lease_expires_at", {}).get("N")
        run_at = item.get("run_at", {}).get("S")
        record = TaskRecord(
            task_id=UUID(item["task_id"]["S"]),
            kind=item["kind"]["S"],
            state=TaskState(item["state"]["S"]),
            attempts=int(item.get("attempts", {}).get("N", "0")),
            created_at=datetime.fromisoformat(item["created_at"]["S"]),
            updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
            error=item["error"]["S"] if "error" in item else None,
            result=json.loads(item["result"]["S"]) if "result" in item else None,
            owner=item["owner"]["S"] if "owner" in item else None,
            lease_expires_at=datetime.fromtimestamp(float(lease), UTC) if lease else None,
            run_at=datetime.fromisoformat(run_at) if run_at else None,
        )
        return record.as_of(utcnow(), self.max_receive_count)

    def list(
        self,
        owner: str | None,
        *,
        state: TaskState | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """`owner`'s tasks (every task if None), newest first: one page of at most `limit`
        (1 to 100), and the cursor of the next page (None after the last).

        A Query on a listing index (keys only), then one BatchGetItem per page of keys. With
        `state` or `kind`, a page reads at most MAX_EXAMINED records: it may hold fewer than
        `limit` tasks and still have a next page. InvalidCursorError for a cursor that this
        method did not return.
        """
        limit = max(1, min(limit, MAX_LIST_LIMIT))
        index, key_name, key_value = (
            (ALL_TASKS, "listing", LISTING) if owner is None else (BY_OWNER, "owner", owner)
        )
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
                if record is not None and record.matches(state, kind):
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
                found[item["task_id"]["S"]] = self._record(item)
            unprocessed = response.get("UnprocessedKeys", {}).get(self.name)
            keys = list(unprocessed["Keys"]) if unprocessed else []
        return found

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
        """Move a task to `running` for one delivery, leased for `lease_seconds` (its time left).

        Refused while the task is finished: the delivery is a duplicate. With an `origin` (what the
        call was built from, such as an S3 object's key), refused for good once another origin has
        claimed the task: the first origin to claim a task is the only one that may ever run it.
        Two deliveries of one task may both claim it; idempotency then lets one of them run it.
        One conditional write; one consistent read more when a claim with an origin is refused.
        """
        if self.transition(
            task_id,
            kind,
            TaskState.RUNNING,
            attempts=attempts,
            owner=owner,
            lease_seconds=lease_seconds,
            origin=origin,
        ):
            return Claim(taken=True)
        if origin is None:
            return Claim(taken=False)
        item = self.client.get_item(
            TableName=self.name,
            Key={"task_id": {"S": str(task_id)}},
            ConsistentRead=True,
        ).get("Item", {})
        other = item.get("origin", {}).get("S")
        if item.get("state", {}).get("S") in FINAL_STATES or other in (None, origin):
            return Claim(taken=False)
        return Claim(taken=False, other_origin=other)
