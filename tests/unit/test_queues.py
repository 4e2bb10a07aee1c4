"""Each queue is named once (offload.queues); the settings, the DLQ tool and the template
agree with that table."""

import os
import subprocess
import sys
from typing import get_args

import pytest
from samtranslator.yaml_helper import yaml_parse

from offload import dlq
from offload.queues import QUEUES, QueueName
from offload.settings import Settings
from tests.support import TEMPLATE


def test_the_queue_names_of_the_code_are_the_table_of_queues() -> None:
    assert {q.name for q in QUEUES} == set(get_args(QueueName))


def test_each_queues_variables_and_outputs_are_the_templates() -> None:
    # Given the template: the variables every function gets, and the stack's outputs
    template = yaml_parse(TEMPLATE.read_text())
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    outputs = template["Outputs"]

    for queue in QUEUES:
        # Then each queue's URL variable and URL output name the same queue, and its DLQ's too
        assert outputs[queue.url_output]["Value"] == variables[queue.url_variable], queue
        assert outputs[queue.dlq_url_output]["Value"] == variables[queue.dlq_url_variable], queue
        assert variables[queue.url_variable] != variables[queue.dlq_url_variable], queue
        # And the DLQ tool reads both outputs of a stack into those variables
        assert dlq.STACK_OUTPUTS[queue.url_output] == queue.url_variable
        assert dlq.STACK_OUTPUTS[queue.dlq_url_output] == queue.dlq_url_variable


def test_settings_give_every_queue_its_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given each queue's variables set
    for queue in QUEUES:
        monkeypatch.setenv(queue.url_variable, f"https://sqs.example/{queue.name}")
        monkeypatch.setenv(queue.dlq_url_variable, f"https://sqs.example/{queue.name}-dlq")

    # When the settings are read, then each queue has its URLs, and the DLQ tool its pair
    settings = Settings()
    for queue in QUEUES:
        assert settings.queue_url(queue.name) == f"https://sqs.example/{queue.name}"
        assert settings.dlq_url(queue.name) == f"https://sqs.example/{queue.name}-dlq"
    # And a queue whose variables are not set has no URL
    monkeypatch.delenv("OFFLOAD_EMAIL_QUEUE_URL")
    assert Settings().queue_url("email") == ""


def test_the_library_imports_nothing_of_the_example_app() -> None:
    # Given a fresh interpreter
    code = (
        "import sys\n"
        "import offload, offload.dlq, offload.worker, offload.aws.uploads_s3, offload.enqueue\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'example_app', 'api', "
        "'workers'}))"
    )
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    # When the worker runtime and the DLQ tool are imported
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # Then no module of the example application came with them
    assert result.stdout.strip().splitlines()[-1] == "[]"
