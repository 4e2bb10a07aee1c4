"""Task status records in DynamoDB (the TasksTable), expired by TTL."""

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from offload.aws import clients
from offload.models import TaskRecord, TaskState, utcnow
from offload.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

FINAL_STATES = [s.value for s in TaskState if s.is_final]


def _expires_at(now: datetime) -> str:
    return str(int((now + timedelta(days=get_settings().task_ttl_days)).timestamp()))


def create(task_id: UUID, kind: str, owner: str | None = None) -> bool:
    """Record a new task as queued. False if a worker has already recorded it.

    A task whose enqueue failed is queued afresh: an Idempotency-Key retry reuses its id.
    `owner` is the caller's subject (the JWT `sub`); only that caller may read the task.
    """
    now = utcnow()
    table = clients.dynamodb()
    item: dict[str, AttributeValueTypeDef] = {
        "task_id": {"S": str(task_id)},
        "kind": {"S": kind},
        "state": {"S": TaskState.QUEUED.value},
        "attempts": {"N": "0"},
        "created_at": {"S": now.isoformat()},
        "updated_at": {"S": now.isoformat()},
        "expires_at": {"N": _expires_at(now)},
    }
    if owner:
        item["owner"] = {"S": owner}
    try:
        table.put_item(
            TableName=get_settings().tasks_table,
            Item=item,
            ConditionExpression="attribute_not_exists(task_id) OR #state = :failed",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":failed": {"S": TaskState.FAILED.value}},
        )
    except table.exceptions.ConditionalCheckFailedException:
        return False
    return True


def transition(
    task_id: UUID,
    kind: str,
    state: TaskState,
    *,
    attempts: int | None = None,
    error: str | None = None,
    result: Any = None,
    owner: str | None = None,
    allow_from_final: bool = False,
) -> bool:
    """Move a task to `state`. Returns False if the task had already finished.

    A finished task (succeeded, failed or dead) never moves back, unless allow_from_final is set
    (a redrive from the DLQ). A record that does not exist yet is created, so a message that
    did not come through the API still gets a status; `owner` (from the message) is written
    only if the record has none, so a worker that writes before the API keeps the owner.
    """
    now = utcnow()
    names = {"#state": "state", "#kind": "kind"}
    values: dict[str, AttributeValueTypeDef] = {
        ":state": {"S": state.value},
        ":kind": {"S": kind},
        ":now": {"S": now.isoformat()},
        ":expires": {"N": _expires_at(now)},
    }
    sets = [
        "#state = :state",
        "#kind = :kind",
        "updated_at = :now",
        "created_at = if_not_exists(created_at, :now)",
        "expires_at = :expires",
    ]
    removes = []
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
    update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    condition = None
    if not allow_from_final:
        condition = "attribute_not_exists(#state) OR NOT #state IN (:f0, :f1, :f2)"
        for index, final in enumerate(FINAL_STATES):
            values[f":f{index}"] = {"S": final}
    kwargs: dict[str, Any] = {}
    if condition:
        kwargs["ConditionExpression"] = condition
    try:
        clients.dynamodb().update_item(
            TableName=get_settings().tasks_table,
            Key={"task_id": {"S": str(task_id)}},
            UpdateExpression=update,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            **kwargs,
        )
    except clients.dynamodb().exceptions.ConditionalCheckFailedException:
        return False
    return True


def get(task_id: UUID) -> TaskRecord | None:
    response = clients.dynamodb().get_item(
        TableName=get_settings().tasks_table,
        Key={"task_id": {"S": str(task_id)}},
        ConsistentRead=True,
    )
    item = response.get("Item")
    if item is None:
        return None
    return TaskRecord(
        task_id=UUID(item["task_id"]["S"]),
        kind=item["kind"]["S"],
        state=TaskState(item["state"]["S"]),
        attempts=int(item.get("attempts", {}).get("N", "0")),
        created_at=datetime.fromisoformat(item["created_at"]["S"]),
        updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
        error=item["error"]["S"] if "error" in item else None,
        result=json.loads(item["result"]["S"]) if "result" in item else None,
        owner=item["owner"]["S"] if "owner" in item else None,
    )
