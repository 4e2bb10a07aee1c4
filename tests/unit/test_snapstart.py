"""SnapStart hooks of the API function: before the snapshot, only what every restored
environment may share; after a restore, what must differ between them."""

import json
import os
import subprocess
import sys

# Runs as the Lambda runtime does with SnapStart: import the handler (init), run the
# before-snapshot hooks (in reverse order of registration), then the after-restore hooks.
SNAPSHOT_AND_RESTORE = """
import json, random, socket, sys

def no_network(*args, **kwargs):
    raise AssertionError("a connection was opened before the snapshot")

socket.socket.connect = no_network
socket.create_connection = no_network

import api.main
import boto3
import snapshot_restore_py

for func, args, kwargs in reversed(snapshot_restore_py.get_before_snapshot()):
    func(*args, **kwargs)
session = boto3.DEFAULT_SESSION._session
loader = session.get_component("data_loader")
keys = [key[1] for key in loader._cache if len(key) > 1 and isinstance(key[1], str)]
primed = sorted({key.split("/")[0] for key in keys})
snapshot_state = random.getstate()
for func, args, kwargs in snapshot_restore_py.get_after_restore():
    func(*args, **kwargs)
print(json.dumps({
    "credentials_resolved": session._credentials is not None,
    "clients_built": "offload" in vars(api.main.app.state).get("_state", {}),
    "primed": primed,
    "reseeded": random.getstate() != snapshot_state,
}))
"""


def test_before_the_snapshot_only_models_load_and_after_a_restore_random_is_reseeded() -> None:
    # Given a fresh interpreter with the API's settings and (fake-free) AWS credentials
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDSNAPSHOT",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "PYTHONPATH": "src",
    }
    # When it goes through init, the snapshot and a restore
    result = subprocess.run(
        [sys.executable, "-c", SNAPSHOT_AND_RESTORE],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout.strip().splitlines()[-1])
    # Then the SDK's models of the API's services were loaded, with no credentials resolved,
    # no client composed and no connection opened (the socket would have raised)
    assert {"sqs", "dynamodb"} <= set(state["primed"])
    assert state["credentials_resolved"] is False
    assert state["clients_built"] is False
    # And each restored environment draws its own random numbers
    assert state["reseeded"] is True
