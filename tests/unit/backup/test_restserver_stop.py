"""`restserver.stop` returns only once the stopped server's port is free: an exiting process loses its
command line before its sockets, and a start right after took the port for another server's."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup import processes, restserver


def test_stop_waits_for_the_stopped_servers_socket_to_go(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server = restserver.RestServer(root=tmp_path / "repositories", port=23190, pidfile=tmp_path / "rest.pid",
                                   logfile=tmp_path / "rest.log")
    server.pidfile.write_text("4242\n")
    monkeypatch.setattr(restserver, "pid", lambda _server: 4242)
    monkeypatch.setattr(processes, "terminate", lambda *_args, **_kw: None)  # "gone" at once
    listeners = [(4242, "a process that has just exited")] * 3 + [None]
    asked: list[int] = []

    def listener_on(port: int) -> tuple[int | None, str] | None:
        asked.append(port)
        return listeners.pop(0)

    monkeypatch.setattr(restserver, "_listener_on", listener_on)
    assert restserver.stop(server) == 4242
    assert asked == [23190] * 4 and not listeners  # asked until the socket was gone
    assert not server.pidfile.exists()


def test_stop_does_not_wait_on_a_port_someone_else_took(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server = restserver.RestServer(root=tmp_path / "repositories", port=23190, pidfile=tmp_path / "rest.pid",
                                   logfile=tmp_path / "rest.log")
    monkeypatch.setattr(restserver, "pid", lambda _server: 4242)
    monkeypatch.setattr(processes, "terminate", lambda *_args, **_kw: None)
    asked: list[int] = []

    def listener_on(port: int) -> tuple[int | None, str] | None:
        asked.append(port)
        return 777, "rest-server"

    monkeypatch.setattr(restserver, "_listener_on", listener_on)
    assert restserver.stop(server) == 4242
    assert asked == [23190]
