"""Run a command on a machine where no namespace can be made: unshare(2) refused with EPERM by a
seccomp filter this process installs on itself before exec (x86_64 syscall numbers).

    python tests/no_namespaces.py COMMAND [ARG...]

The test of `--require-kernel` and `CI` runs pytest this way: the kernel, not a stand-in,
says no.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
SYS_UNSHARE = 272
LOAD_WORD, JUMP_IF_EQUAL, RETURN = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K


def instruction(code: int, k: int, if_true: int = 0, if_false: int = 0) -> bytes:
    return struct.pack("HBBI", code, if_true, if_false, k)


PROGRAM = b"".join([
    instruction(LOAD_WORD, 4),  # seccomp_data.arch
    instruction(JUMP_IF_EQUAL, AUDIT_ARCH_X86_64, 1, 0),
    instruction(RETURN, SECCOMP_RET_ERRNO | errno.ENOSYS),  # another ABI: refuse everything
    instruction(LOAD_WORD, 0),  # seccomp_data.nr
    instruction(JUMP_IF_EQUAL, SYS_UNSHARE, 0, 1),
    instruction(RETURN, SECCOMP_RET_ERRNO | errno.EPERM),
    instruction(RETURN, SECCOMP_RET_ALLOW),
])


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def refuse_unshare() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    program = SockFprog(len(PROGRAM) // 8, PROGRAM)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(
        PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0
    ) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")


if __name__ == "__main__":
    refuse_unshare()
    os.execvp(sys.argv[1], sys.argv[1:])
