"""The runner's port check: a listener makes `make run` stop with a clear message, connections
left in TIME_WAIT by a run that just stopped do not."""

import socket
from collections.abc import Iterator

import pytest

from offload.local.runner import LocalSystem, Options


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and moto's server
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_port_with_a_listener_is_refused_with_the_flag_to_change_it(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    system = LocalSystem(Options(api_port=free_port(), moto_port=port))

    with pytest.raises(SystemExit) as stopped:
        system.check_ports()

    assert f"port {port} on 127.0.0.1 is in use" in str(stopped.value)
    assert 'make run ARGS="--moto-port <port>"' in str(stopped.value)


def test_connections_in_time_wait_do_not_block_a_new_run(listener: socket.socket) -> None:
    # Given a server port whose side closed a connection first (TIME_WAIT), then stopped
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()
    client.recv(1)
    client.close()
    listener.close()

    # When a new run checks its ports, Then it may start
    LocalSystem(Options(api_port=port, moto_port=free_port())).check_ports()
