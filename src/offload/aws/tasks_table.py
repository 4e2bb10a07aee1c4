"""Task status records in DynamoDB (the TasksTable), expired by TTL."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from offload.models import TaskRecord, TaskState, utcnow

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

FINAL_STATES = [s.value for s in TaskState if s.is_final]
# No Lambda invocation runs longer: the lease of a running claim whose caller gave none.
MAX_LAMBDA_SECONDS = 900


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
        }
        sets = [
            "#state = :state",
            "#kind = :kind",
            "updated_at = :now",
            "created_at = if_not_exists(created_at, :now)",
            "expires_at = :expires",
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
        condition = "(attribute_not_exists(#state) OR NOT #state IN (:f0, :f1, :f2))"
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
        if item is None:
            return None
        return self._record(item, utcnow())

    def _record(self, item: "Mapping[str, AttributeValueTypeDef]", now: datetime) -> TaskRecord:
        lease = item.get("lease_expires_at", {}).get("N")
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
        )
        return record.as_of(now, self.max_receive_count)

    # TODO(merge): a minimal stand-in for the list() that helper "sched" adds (same name and
    # signature); the lead keeps sched's. It scans the table: fine for the local system only.
    def list(
        self,
        owner: str | None,
        *,
        state: TaskState | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """`owner`'s tasks (None: the tasks without an owner), newest first, `limit` at most,
        from `cursor` (the second value of the call before; None when there are no more)."""
        names: dict[str, str] = {"#owner": "owner"}
        values: dict[str, AttributeValueTypeDef] = {}
        conditions = ["attribute_not_exists(#owner)"]
        if owner is not None:
            conditions = ["#owner = :owner"]
            values[":owner"] = {"S": owner}
        if kind is not None:
            conditions.append("#kind = :kind")
            names["#kind"] = "kind"
            values[":kind"] = {"S": kind}
        scan: dict[str, Any] = {
            "TableName": self.name,
            "FilterExpression": " AND ".join(conditions),
            "ExpressionAttributeNames": names,
        }
        if values:
            scan["ExpressionAttributeValues"] = values
        now = utcnow()
        records = [
            self._record(item, now)
            for page in self.client.get_paginator("scan").paginate(**scan)
            for item in page["Items"]
        ]
        if state is not None:  # after as_of(): a stalled last claim reads as dead
            records = [r for r in records if r.state is state]
        records.sort(key=lambda r: (r.created_at, str(r.task_id)), reverse=True)
        if cursor is not None:
            after = cursor.split("|", 1)
            records = [r for r in records if [r.created_at.isoformat(), str(r.task_id)] < after]
        page_, more = records[:limit], len(records) > limit
        last = page_[-1] if page_ else None
        return page_, f"{last.created_at.isoformat()}|{last.task_id}" if more and last else None

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
