"""UDP listen sockets for shards: SO_REUSEPORT so N shards share one port."""
from __future__ import annotations

import ipaddress
import os
import socket
import struct

from ..config.tree import Listener
from ..schema import IPV4_MAPPED_PREFIX

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)         # Linux: u32 sk_meminfo[], rmem_alloc first
SK_MEMINFO_DROPS = 8                                    # the socket's drop counter (/proc/net/udp's "drops")
SK_MEMINFO_BYTES = (SK_MEMINFO_DROPS + 1) * 4
# Without nfacctd_pipe_size a shard asks for this much: the kernel default (~200 KB, ~90 datagrams) cannot
# hold what arrives while a shard gathers a batch (gather.GatherClock) or decodes one at 100k+ datagrams/s.
DEFAULT_RCVBUF = 32 << 20


def open_udp(listener: Listener) -> socket.socket:
    """Bind a non-blocking SO_REUSEPORT UDP socket for one shard.

    "::" (the default) is dual-stack: IPv4 exporters arrive IPv4-mapped.
    """
    addr = ipaddress.ip_address(listener.ip)
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if listener.ipv6_only else 0)
        set_rcvbuf(sock, listener.rcvbuf or DEFAULT_RCVBUF)
        sock.bind((listener.ip, listener.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for `size` bytes of receive buffer, forcing past rmem_max when we are root."""
    try:
        if os.geteuid() == 0:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _meminfo(sock: socket.socket) -> tuple[int, ...]:
    """SO_MEMINFO's u32 counters (rmem_alloc first, drops at SK_MEMINFO_DROPS on Linux >= 4.10); () where the
    option is missing."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, SK_MEMINFO_BYTES)
    except OSError:
        return ()
    return struct.unpack_from(f"{len(raw) // 4}I", raw)


def queued_bytes(sock: socket.socket) -> int:
    """Bytes of receive buffer the socket's queued datagrams are charged (SO_MEMINFO's rmem_alloc: what the
    kernel compares with SO_RCVBUF before it drops); 0 where the option is missing."""
    info = _meminfo(sock)
    return info[0] if info else 0


def kernel_drops(sock: socket.socket) -> int:
    """The kernel's drop counter for this socket: SO_MEMINFO's, else /proc/net/udp{,6}'s (matched by inode:
    a scan of every UDP socket of the host)."""
    info = _meminfo(sock)
    if len(info) > SK_MEMINFO_DROPS:
        return info[SK_MEMINFO_DROPS]
    inode = str(os.fstat(sock.fileno()).st_ino)
    for path in ("/proc/net/udp6", "/proc/net/udp"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == inode:
                        return int(cols[-1])
        except OSError:
            continue
    return 0


class AddressCache:
    """recvfrom host strings → 16-byte exporter addresses, parsed once per exporter."""

    def __init__(self) -> None:
        self._cache: dict[str, bytes] = {}

    def __call__(self, host: str) -> bytes:
        got = self._cache.get(host)
        if got is None:
            a = ipaddress.ip_address(host.split("%")[0])
            if a.version == 4:
                got = IPV4_MAPPED_PREFIX + a.packed
            elif a.ipv4_mapped is not None:
                got = IPV4_MAPPED_PREFIX + a.ipv4_mapped.packed
            else:
                got = a.packed
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[host] = got
        return got
