"""A FUSE filesystem that stops answering: the review's hung `capture`, reproduced with the real kernel.

    python -m tests.namespace.fuse_stall SCRATCH

The process unshares its mount namespace (the host never sees the FUSE mount), mounts a tmpfs on
SCRATCH and a FUSE filesystem on SCRATCH/fuse, served from /dev/fuse by a thread of its own
speaking the raw protocol (include/uapi/linux/fuse.h): INIT, LOOKUP, GETATTR, OPEN, ACCESS and
the releases, for a root directory holding one file. It opens that file and makes the directory
its cwd, then stops answering: every request after that is read and left pending, exactly what
an unresponsive FUSE server does. A stat(2) of /proc/PID/fd/N or /proc/PID/cwd now blocks in the
kernel (D state, deaf to SIGKILL: the request was already handed to the server).

It prints "ready PID" and waits for a line on standard input (or its end); then it answers
every pending request with EIO, which frees whatever waited on one, answers normally again,
and exits. Killed instead, it frees them all the same: its /dev/fuse fd (fd 3, closed before the
FUSE file on the way out) is the connection's last, and closing it aborts the connection.
(/sys/fs/fuse/connections/N/abort is not used: fusectl is not mounted on every machine.)
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading

from planner import kernel

FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR, FUSE_OPEN, FUSE_RELEASE = 1, 2, 3, 14, 18
FUSE_FLUSH, FUSE_INIT, FUSE_OPENDIR, FUSE_RELEASEDIR, FUSE_ACCESS = 25, 26, 27, 29, 34
FUSE_INTERRUPT, FUSE_BATCH_FORGET = 36, 42
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr: ino size blocks a/m/ctime nsecs mode nlink uid gid rdev blksize flags
ROOT, FILE = 1, 2
MS_NOSUID, MS_NODEV = 0x2, 0x4


def _attr(node: int) -> bytes:
    mode = 0o40755 if node == ROOT else 0o100644
    return ATTR.pack(node, 0, 0, 0, 0, 0, 0, 0, 0, mode, 2 if node == ROOT else 1, 0, 0, 0, 4096, 0)


class StallingServer:
    """Answers what mounting, opening and chdir need; after stall(), answers nothing."""

    def __init__(self, fuse_fd: int) -> None:
        self.fd = fuse_fd
        self.stalled = False
        self.pending: list[int] = []  # requests read and left unanswered
        self.lock = threading.Lock()

    def stall(self) -> None:
        with self.lock:
            self.stalled = True

    def resume(self) -> None:
        """Answer every pending request with EIO, then everything as before."""
        with self.lock:
            self.stalled = False
            for unique in self.pending:
                with contextlib.suppress(OSError):  # ENOENT: its caller is gone already
                    self.reply(unique, -5)
            self.pending.clear()

    def reply(self, unique: int, error: int = 0, body: bytes = b"") -> None:
        os.write(self.fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), error, unique) + body)

    def serve(self) -> None:
        while True:
            try:
                request = os.read(self.fd, 1 << 17)
            except OSError:
                return  # aborted or unmounted: the connection is gone
            _, opcode, unique, node, *_ = IN_HEADER.unpack_from(request)
            if opcode in (FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT):
                continue  # never answered (an interrupt may be: the request it names is what matters)
            with self.lock:
                if self.stalled:
                    self.pending.append(unique)  # read, not answered: the caller now waits in the kernel
                    continue
            if opcode == FUSE_INIT:
                _major, minor = struct.unpack_from("<II", request, IN_HEADER.size)
                # fuse_init_out: major minor max_readahead flags max_background congestion_threshold
                # max_write time_gran max_pages map_alignment flags2 max_stack_depth unused[6]
                self.reply(unique, body=struct.pack("<IIIIHHIIHHII24x", 7, min(minor, 31), 0, 0, 16, 12, 1 << 16,
                                                    1, 16, 0, 0, 0))
            elif opcode == FUSE_LOOKUP:
                name = request[IN_HEADER.size:].split(b"\0", 1)[0]
                if node == ROOT and name == b"file":  # attributes valid for 0 s: every stat asks again
                    self.reply(unique, body=struct.pack("<QQQQII", FILE, 0, 3600, 0, 0, 0) + _attr(FILE))
                else:
                    self.reply(unique, -2)  # ENOENT
            elif opcode == FUSE_GETATTR:
                self.reply(unique, body=struct.pack("<QII", 0, 0, 0) + _attr(node))
            elif opcode in (FUSE_OPEN, FUSE_OPENDIR):
                self.reply(unique, body=struct.pack("<QIi", 0, 0, 0))
            elif opcode in (FUSE_RELEASE, FUSE_RELEASEDIR, FUSE_FLUSH, FUSE_ACCESS):
                self.reply(unique)
            else:
                self.reply(unique, -38)  # ENOSYS


def main(scratch: str) -> None:
    kernel.enter_private_namespace(user_ns=False)
    kernel.mount("scratch", scratch, "tmpfs", 0, "mode=0755")
    mountpoint = f"{scratch}/fuse"
    os.mkdir(mountpoint)
    fuse_fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    kernel.mount("overmount-stall", mountpoint, "fuse", MS_NOSUID | MS_NODEV,
                 f"fd={fuse_fd},rootmode=40000,user_id=0,group_id=0")
    server = StallingServer(fuse_fd)
    threading.Thread(target=server.serve, daemon=True).start()
    held = os.open(f"{mountpoint}/file", os.O_RDONLY | os.O_CLOEXEC)  # the process's own fd on the FUSE file
    os.chdir(mountpoint)
    server.stall()
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.readline()
    server.resume()
    os.close(held)


if __name__ == "__main__":
    main(sys.argv[1])
