"""provisioning.chardev: the host end of a guestfwd found among a process's sockets and aborted so the
chardev reconnects (this test process stands in for QEMU; real sockets on 127.0.0.1)."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator

import pytest

from provisioning import chardev

TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:5DC2 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 0100007F:A2B4 0100007F:5DC2 01 00000000:00000015 00:00000000 00000000     0        0 222 1
   2: 0100007F:A2B6 0100007F:5DC2 08 00000000:00000000 00:00000000 00000000     0        0 333 1
   3: 0100007F:A2B8 0100007F:5DC2 01 00000000:00000000 00:00000000 00000000     0        0 444 1
   4: 0100007F:A2BA 0100007F:5DC3 01 00000000:00000000 00:00000000 00000000     0        0 555 1
"""


def test_only_the_processs_established_connections_to_the_port_are_its_forwards() -> None:
    # 111 listens, 333 is closing, 444 is another process's, 555 goes to another port.
    assert chardev.parse_tcp_table(TABLE, {"111", "222", "333", "555"}, 0x5DC2) == [
        chardev.Connection(0xA2B4, unread=0x15)]
    # A reset also takes the one the listener closed (333, CLOSE_WAIT).
    assert chardev.parse_tcp_table(TABLE, {"111", "222", "333", "555"}, 0x5DC2,
                                   (chardev.ESTABLISHED, chardev.CLOSE_WAIT)) == [
        chardev.Connection(0xA2B4, unread=0x15), chardev.Connection(0xA2B6, unread=0)]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def test_a_reset_aborts_the_connection_at_once_and_a_new_ones_unread_greeting_is_seen(
        listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    ours = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    local = ours.getsockname()[1]
    assert chardev.host_connections(os.getpid(), port) == [chardev.Connection(local, 0)]

    assert chardev.reset(os.getpid(), port) == [local]
    # The process's own socket fails at once (what makes QEMU's chardev drop it and reconnect even
    # when nothing reads from it), and the server's side sees a reset, not a polite close.
    poller = select.poll()
    poller.register(ours, select.POLLHUP)
    assert poller.poll(1000) and poller.poll(0)[0][1] & select.POLLHUP
    with pytest.raises(ConnectionResetError):
        served.recv(1)
    assert chardev.host_connections(os.getpid(), port) == []
    assert chardev.wait_connected(os.getpid(), port, other_than=[local], timeout_s=0.2) is None

    again = socket.create_connection(("127.0.0.1", port))
    fresh = chardev.wait_connected(os.getpid(), port, other_than=[local], timeout_s=2)
    assert fresh is not None and fresh.local_port == again.getsockname()[1]
    greeted, _ = listener.accept()
    # Nothing sent yet, then a greeting this process leaves unread, then the same one read.
    assert not chardev.holds_unread(os.getpid(), port, fresh.local_port, settle_s=0.05, timeout_s=0.3)
    greeted.sendall(b"SSH-2.0-test\r\n")
    assert chardev.holds_unread(os.getpid(), port, fresh.local_port, settle_s=0.05, timeout_s=2)
    assert again.recv(64) == b"SSH-2.0-test\r\n"
    assert not chardev.holds_unread(os.getpid(), port, fresh.local_port, settle_s=0.05, timeout_s=0.3)
    for sock in (ours, served, again, greeted):
        sock.close()


def test_a_reset_aborts_a_connection_the_listener_closed_unnoticed(listener: socket.socket) -> None:
    """The listener restarted while nothing read from the forward: the process's socket sits in
    CLOSE_WAIT, which raises no hang-up. The reset aborts it, and then it does."""
    port = listener.getsockname()[1]
    ours = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    local = ours.getsockname()[1]
    served.sendall(b"SSH-2.0-old\r\n")
    served.close()  # the old listener's end goes; ours reads nothing, so it stays in CLOSE_WAIT
    poller = select.poll()
    poller.register(ours, select.POLLHUP)
    assert poller.poll(200) == []  # no hang-up: what QEMU would wait on for good
    assert chardev.host_connections(os.getpid(), port) == []  # not established any more
    assert chardev.reset(os.getpid(), port) == [local]
    assert poller.poll(1000) and poller.poll(0)[0][1] & select.POLLHUP
    ours.close()
