"""recvmmsg(2) for a shard: up to a whole batch of datagrams in one system call, senders decoded vectorised.

Python's socket module has no recvmmsg; a shard calling recvfrom_into once per datagram pays ~2-3 µs of
interpreter work per datagram (the call, the sender tuple, its text form), more than decoding the
datagram's 30 flows.  Here the kernel fills fixed slots of one numpy buffer, one iovec per slot, and the
senders' sockaddrs land in a numpy array that becomes 16-byte exporter addresses in a few array operations.

The C structures (x86-64 and aarch64 Linux, LP64) are numpy structured dtypes with explicit offsets:

    struct iovec   { void *iov_base; size_t iov_len; }                                   16 bytes
    struct msghdr  { void *msg_name; socklen_t msg_namelen; struct iovec *msg_iov;
                     size_t msg_iovlen; void *msg_control; size_t msg_controllen;
                     int msg_flags; }                                                    56 bytes
    struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; }                      64 bytes
    sockaddr_in  { sa_family_t (u16 native); u16 port (BE); u8 addr[4]; ... }
    sockaddr_in6 { sa_family_t; u16 port; u32 flowinfo; u8 addr[16]; u32 scope_id }       28 bytes
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import struct
import numpy as np

from ..proc import anonymous_map
from ..schema import IPV4_MAPPED_PREFIX

MSG_DONTWAIT = 0x40
NAME_BYTES = 32                 # room for a sockaddr_in6 (28)
SLOT_BYTES = 65536              # > the largest UDP payload (65507 over IPv4, 65527 over IPv6)

IOVEC = np.dtype({"names": ["base", "len"], "formats": ["u8", "u8"], "offsets": [0, 8], "itemsize": 16})
MMSGHDR = np.dtype({"names": ["name", "namelen", "iov", "iovlen", "control", "controllen", "flags", "len"],
                    "formats": ["u8", "u4", "u8", "u8", "u8", "u8", "i4", "u4"],
                    "offsets": [0, 8, 16, 24, 32, 40, 48, 56], "itemsize": 64})

_MAPPED = np.frombuffer(IPV4_MAPPED_PREFIX, dtype=np.uint8)


def _libc_recvmmsg():
    if struct.calcsize("P") != 8 or not hasattr(socket, "AF_INET6"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_RECVMMSG = _libc_recvmmsg()


def available() -> bool:
    return _RECVMMSG is not None


class MmsgReceiver:
    """Receive up to `count` datagrams per call into slots of SLOT_BYTES of `buf` (datagram i at slot i).

    Slots hold the largest UDP payload there is, so nothing is ever cut; the buffer is count x 64 KiB of
    address space, but only the pages datagrams touch become memory (~1 page per slot for 1500-byte exports).
    """

    def __init__(self, sock: socket.socket, count: int) -> None:
        if _RECVMMSG is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available")
        self.sock, self.count = sock, count
        slot_bytes = SLOT_BYTES
        # only the 4 KiB pages datagrams are written to become memory (huge pages off: with them one datagram
        # per 64 KiB slot made the whole buffer resident, 64 MiB a shard)
        self.buf = np.frombuffer(anonymous_map(count * slot_bytes, huge_pages=False), dtype=np.uint8)
        self.names = np.zeros((count, NAME_BYTES), dtype=np.uint8)
        self.iov = np.zeros(count, dtype=IOVEC)
        self.hdr = np.zeros(count, dtype=MMSGHDR)
        self.iov["base"] = self.buf.ctypes.data + np.arange(count, dtype=np.uint64) * slot_bytes
        self.iov["len"] = slot_bytes
        self.hdr["name"] = self.names.ctypes.data + np.arange(count, dtype=np.uint64) * NAME_BYTES
        self.hdr["iov"] = self.iov.ctypes.data + np.arange(count, dtype=np.uint64) * IOVEC.itemsize
        self.hdr["iovlen"] = 1
        self.slot_offsets = np.arange(count, dtype=np.int64) * slot_bytes
        self.exporters = np.zeros((count, 16), dtype=np.uint8)
        self._fd = sock.fileno()
        self._hdr_ptr = self.hdr.ctypes.data
        self._af_inet = socket.AF_INET

    def receive(self) -> int:
        """Datagrams queued now, up to count, into slots 0..n-1 (0: none); then lengths(n) and exporters[:n]."""
        for _ in range(4):
            self.hdr["namelen"] = NAME_BYTES        # value-result: the kernel writes each sender's length back
            n = _RECVMMSG(self._fd, self._hdr_ptr, self.count, MSG_DONTWAIT, None)
            if n > 0:
                break
            if n == 0:
                return 0
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            # EINTR, or an error queued on the socket (an ICMP port unreachable): that call consumed it; again
        else:
            return 0
        names = self.names[:n]
        family = names[:, 0].astype(np.uint16) | (names[:, 1].astype(np.uint16) << 8)
        exp = self.exporters[:n]
        exp[:] = names[:, 8:24]                     # sockaddr_in6.sin6_addr (IPv4 senders on a v6 socket: mapped)
        v4 = family == self._af_inet
        if v4.any():
            exp[v4, :12] = _MAPPED
            exp[v4, 12:] = names[v4, 4:8]
        return n

    def lengths(self, n: int) -> np.ndarray:
        return self.hdr["len"][:n].astype(np.int64)
