"""recvmmsg receiver (engine/shards/mmsg.py): every datagram whole, senders as 16-byte addresses, errors skipped."""
import socket
import time

import numpy as np
import pytest

from engine.schema import IPV4_MAPPED_PREFIX
from engine.shards import mmsg
from engine.shards.receiver import MAX_PACKETS, UdpBatcher
from engine.shards.sockets import queued_bytes, set_rcvbuf

from conftest import smaps_mapping

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="no recvmmsg in this libc")


def _bound(family: int, host: str) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host, 0))
    s.setblocking(False)
    return s


def _wait_queued(sock: socket.socket) -> None:
    import select
    select.select([sock], [], [], 2.0)


def test_ipv4_socket_many_datagrams_and_sizes():
    rx = _bound(socket.AF_INET, "127.0.0.1")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.7", 0))
    payloads = [bytes([i % 251]) * size for i, size in enumerate([1, 100, 1500, 9000, 60000, 65507, 3])]
    for p in payloads:
        tx.sendto(p, rx.getsockname())
    _wait_queued(rx)
    r = mmsg.MmsgReceiver(rx, 16)
    n = r.receive()
    assert n == len(payloads)
    lengths = r.lengths(n)
    for i, p in enumerate(payloads):
        o = int(r.slot_offsets[i])
        assert lengths[i] == len(p)
        assert r.buf[o:o + len(p)].tobytes() == p
    want = np.frombuffer(IPV4_MAPPED_PREFIX + socket.inet_aton("127.0.0.7"), np.uint8)
    assert (r.exporters[:n] == want).all()
    assert r.receive() == 0                     # drained: EAGAIN is "nothing", not an error
    rx.close(), tx.close()


def test_dual_stack_socket_maps_ipv4_and_keeps_ipv6():
    try:
        rx = _bound(socket.AF_INET6, "::")
    except OSError:
        pytest.skip("no IPv6")
    port = rx.getsockname()[1]
    tx4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx4.bind(("127.0.0.9", 0))
    tx6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        tx6.sendto(b"six", ("::1", port))
    except OSError:
        pytest.skip("no IPv6 loopback")
    tx4.sendto(b"four", ("127.0.0.1", port))
    _wait_queued(rx)
    import time
    time.sleep(0.05)
    r = mmsg.MmsgReceiver(rx, 4)
    n = r.receive()
    assert n == 2
    got = {r.buf[int(r.slot_offsets[i]):int(r.slot_offsets[i]) + int(r.lengths(n)[i])].tobytes(): bytes(r.exporters[i])
           for i in range(n)}
    assert got[b"six"] == socket.inet_pton(socket.AF_INET6, "::1")
    assert got[b"four"] == IPV4_MAPPED_PREFIX + socket.inet_aton("127.0.0.9")
    rx.close(), tx4.close(), tx6.close()


def test_more_than_one_batch_is_left_queued():
    rx = _bound(socket.AF_INET, "127.0.0.1")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(10):
        tx.sendto(i.to_bytes(2, "big"), rx.getsockname())
    _wait_queued(rx)
    r = mmsg.MmsgReceiver(rx, 4)
    seen = []
    while (n := r.receive()):
        seen += [int.from_bytes(r.buf[int(o):int(o) + 2].tobytes(), "big") for o in r.slot_offsets[:n]]
    assert seen == list(range(10))
    rx.close(), tx.close()


def test_queued_socket_error_is_skipped_not_raised():
    # a connected UDP socket that sent to a closed port gets ECONNREFUSED queued; receive() must not raise
    dead = _bound(socket.AF_INET, "127.0.0.1")
    dead_addr = dead.getsockname()
    dead.close()
    s = _bound(socket.AF_INET, "127.0.0.1")
    s.connect(dead_addr)
    s.send(b"x")
    import time
    time.sleep(0.05)
    r = mmsg.MmsgReceiver(s, 4)
    assert r.receive() == 0
    s.close()


def test_batcher_uses_recvmmsg_and_builds_packet_batches():
    rx = _bound(socket.AF_INET, "127.0.0.1")
    set_rcvbuf(rx, 8 << 20)                     # the default (~200 KB) holds ~256 small datagrams
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(MAX_PACKETS + 5):
        tx.sendto(b"p%d" % i, rx.getsockname())
    _wait_queued(rx)
    b = UdpBatcher(rx)
    assert b.mmsg is not None
    first = b.receive()
    second = b.receive()
    assert len(first) == MAX_PACKETS and len(second) == 5
    assert second.packet(4).tobytes() == b"p%d" % (MAX_PACKETS + 4)
    assert b.receive() is None
    rx.close(), tx.close()


def test_receive_buffer_is_kept_off_huge_pages():
    """One ~1500-byte datagram per 64 KiB slot: the buffer must stay in 4 KiB pages.  On huge pages
    (numpy asks for them on big arrays; khugepaged collapses a 2 MiB range holding a single written page)
    the whole 64 MiB became resident in every shard within seconds of traffic."""
    rx = _bound(socket.AF_INET, "127.0.0.1")
    r = mmsg.MmsgReceiver(rx, MAX_PACKETS)
    mapping = smaps_mapping(r.buf.ctypes.data)
    assert int(mapping["Size"].split()[0]) * 1024 >= MAX_PACKETS * mmsg.SLOT_BYTES
    assert "nh" in mapping["VmFlags"].split()                     # MADV_NOHUGEPAGE
    assert "hg" not in mapping["VmFlags"].split()


def test_queued_bytes_is_what_the_kernel_charges_the_queue():
    rx = _bound(socket.AF_INET, "127.0.0.1")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert queued_bytes(rx) == 0
    for _ in range(20):
        tx.sendto(b"x" * 3000, rx.getsockname())
    deadline = time.monotonic() + 2.0
    while queued_bytes(rx) < 20 * 3000 and time.monotonic() < deadline:
        time.sleep(0.01)
    charged = queued_bytes(rx)
    assert 20 * 3000 <= charged <= 20 * 3 * 3000       # payload plus the kernel's overhead per datagram
    batch = UdpBatcher(rx).receive()
    assert batch is not None and len(batch) == 20
    assert queued_bytes(rx) == 0
    rx.close(), tx.close()
