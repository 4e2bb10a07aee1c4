"""Tasks that the reliability suite registers, in the test process (by importing this module)
and in worker processes (OFFLOAD_TASK_MODULES=tests.reliability.fault_tasks).

`reliability_hold` stands for any task whose worker dies in the middle of it. In a process whose
environment sets HOLD_ON_CALL=N, the calls before the N-th fail transiently and the N-th
writes {"reliability_holding": key} on stdout and hangs, for the test to SIGKILL the process.
Anywhere else it has its effect (counted in `effects`) and succeeds.
"""

import json
import os
import sys
import time
from collections import Counter

from offload.errors import TransientTaskError
from offload.registry import task

HOLD_ON_CALL = "RELIABILITY_HOLD_ON_CALL"
HOLDING = "reliability_holding"

effects: Counter[str] = Counter()
_calls: Counter[str] = Counter()


@task(name="reliability_hold")
def hold(key: str) -> str:
    """Fail, then hang on the HOLD_ON_CALL-th call in a victim process; elsewhere succeed once."""
    hold_on = int(os.environ.get(HOLD_ON_CALL, "0"))
    if not hold_on:
        effects[key] += 1
        return f"done: {key}"
    _calls[key] += 1
    if _calls[key] < hold_on:
        raise TransientTaskError(f"call {_calls[key]} of {key} failed (a transient fault)")
    sys.stdout.write(json.dumps({HOLDING: key}) + "\n")
    sys.stdout.flush()
    time.sleep(120)
    raise TransientTaskError(f"{key}: held for 120 s and never killed")
