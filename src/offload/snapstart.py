"""Lambda SnapStart runtime hooks: what is safe to do before the snapshot, and after a restore.

With SnapStart (python3.12+, on published versions), Lambda runs a function's init once when a
version is published, snapshots the execution environment and restores every new environment
from that snapshot. Whatever init leaves in memory is shared by all of them, so before the
snapshot this only loads what is the same everywhere and holds no secret:

- the modules (the handler's import has done that) and the app (built at import);
- the AWS SDK's service models and endpoint rules for the services the API calls, into the
  default session's loader: files read from the package, no client, no credentials resolved,
  no connection opened (credentials and connections would go stale in the snapshot).

After a restore, `random` is reseeded: every restored environment would otherwise draw the
same sequence (uuid and secrets use os.urandom and need nothing).

`register()` registers them through `snapshot_restore_py`, which the Lambda Python runtime
provides; anywhere else (tests, the local system) it does nothing and answers False.
"""

import random
from collections.abc import Iterable

API_SERVICES = ("sqs", "dynamodb")


def load_service_models(services: Iterable[str]) -> None:
    """Read the SDK's models of `services` into the default session's loader cache."""
    import boto3

    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    session = boto3.DEFAULT_SESSION._session  # botocore's; its loader caches what it reads
    for service in services:
        session.get_service_model(service)
        session.get_service_data(service)
    session.get_component("endpoint_resolver")


def reseed() -> None:
    random.seed()


def register(services: Iterable[str] = API_SERVICES) -> bool:
    """Register the hooks, if this runs where SnapStart can call them (the Lambda runtime)."""
    try:
        from snapshot_restore_py import (
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:
        return False
    register_before_snapshot(load_service_models, tuple(services))
    register_after_restore(reseed)
    return True
