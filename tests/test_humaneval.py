"""Tests of rlsft.humaneval: correct/wrong programs, code extraction, and hostile programs that
must not harm the run or the machine. Each hostile test also checks that the protection really
acted (the sentinel file is intact, the server saw no connection, no process is left, ...)."""
from __future__ import annotations

import glob
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from rlsft import humaneval as H
from rlsft.humaneval import (SANDBOX_UID_BASE, build_completion, check_program, extract_code,
                             sandbox_info, verify_humaneval)

FIXTURES = Path(__file__).parent / "fixtures"
PROBLEMS = [json.loads(line) for line in (FIXTURES / "humaneval_mini.jsonl").read_text().splitlines()]
INFO = sandbox_info()
needs_uid_drop = pytest.mark.skipif(not INFO["privilege_drop"],
                                    reason="needs root: throw-away uid, RLIMIT_NPROC, kill-by-uid")
needs_netns = pytest.mark.skipif(not INFO["netns"], reason="no network namespace (needs CAP_SYS_ADMIN)")
needs_chroot = pytest.mark.skipif(not INFO["chroot"], reason="no private root (needs CAP_SYS_ADMIN)")

STUB_PROMPT = "def f(*args):\n"
CHECK_CALLS = "def check(candidate):\n    candidate()\n"


def run_hostile(body: str, test: str = CHECK_CALLS, **kw) -> dict:
    """Run ``body`` (the body of f) in the sandbox."""
    return check_program(STUB_PROMPT, body, test, "f", **kw)


def sandbox_processes() -> dict[int, int]:
    """{pid: uid} of live processes running under any throw-away sandbox uid."""
    return {pid: uid for pid, (uid, state) in H._proc_uids().items()
            if uid >= SANDBOX_UID_BASE and state != "Z"}


@pytest.fixture
def no_leftovers():
    """After the test: no sandbox process and no sandbox work folder remain."""
    before_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "rlsft-sandbox-*")))
    before_procs = set(sandbox_processes())
    yield

    def leftovers():
        dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "rlsft-sandbox-*")))
        return dirs - before_dirs, set(sandbox_processes()) - before_procs
    deadline = time.monotonic() + 10    # those of concurrent runs (a shared machine) go away
    while any(leftovers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    dirs, procs = leftovers()
    assert not procs, "sandbox processes left behind"
    assert not dirs, "sandbox work folders left behind"


# ------------------------------------------------------------------------------ correct / wrong

@pytest.mark.parametrize("prob", PROBLEMS, ids=[p["task_id"] for p in PROBLEMS])
def test_canonical_solution_passes(prob, no_leftovers):
    r = check_program(prob["prompt"], prob["canonical_solution"], prob["test"], prob["entry_point"])
    assert r["passed"] is True and r["status"] == "passed", r
    assert r["seconds"] < 10


@pytest.mark.parametrize("prob", PROBLEMS, ids=[p["task_id"] for p in PROBLEMS])
def test_full_function_in_markdown_passes(prob):
    text = ("Here is my solution.\n```python\n" + prob["prompt"] + prob["canonical_solution"]
            + "```\nIt runs in linear time.")
    code, ok = verify_humaneval(text, prob)
    assert ok is True and f"def {prob['entry_point']}" in code


def test_wrong_solution_fails():
    prob = PROBLEMS[1]
    r = check_program(prob["prompt"], "    return 0\n", prob["test"], prob["entry_point"])
    assert (r["passed"], r["status"]) == (False, "failed")
    assert "AssertionError" in r["detail"]
    assert verify_humaneval("    return len(s)\n", prob) == ("    return len(s)\n", False)


@pytest.mark.parametrize("body, needle", [
    ("    return (\n", "SyntaxError"),
    ("    raise ValueError('boom')\n", "ValueError: boom"),
    ("    return undefined_name\n", "NameError"),
])
def test_errors_are_errors(body, needle):
    r = run_hostile(body)
    assert (r["passed"], r["status"]) == (False, "error") and needle in r["detail"]


def test_missing_entry_point_and_check():
    r = check_program("", "def g():\n    return 1\n", CHECK_CALLS, "f")
    assert r["status"] == "error" and "'f' is not defined" in r["detail"]
    r = check_program(STUB_PROMPT, "    return 1\n", "x = 1\n", "f")
    assert r["status"] == "error" and "check()" in r["detail"]


@pytest.mark.parametrize("cheat", [
    "    pass\nimport sys\nsys.exit(0)\n",                       # exit before the tests run
    "    pass\nimport posix\nposix._exit(0)\n",
    "    pass\nprint('passed')\nprint('{\"status\": \"passed\"}')\n",
    "    import posix\n    if posix.fork() == 0:\n        return 1\n    raise SystemExit(0)\n",
])
def test_cannot_fake_a_pass(cheat):
    r = check_program(STUB_PROMPT, cheat, "def check(c):\n    assert c() == 1\n", "f", timeout=5)
    assert r["passed"] is False, r


def test_invalid_arguments():
    with pytest.raises(ValueError, match="identifier"):
        check_program("", "", "", "not valid")
    with pytest.raises(ValueError, match="timeout"):
        check_program("", "", "", "f", timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        check_program("", "", "", "f", memory_mb=1)
    with pytest.raises(TypeError):
        check_program(None, "", "", "f")
    with pytest.raises(KeyError, match="entry_point"):
        verify_humaneval("x", {"prompt": "", "test": ""})


def test_parallel_checks(no_leftovers):
    results = [None] * 4

    def run(i):
        p = PROBLEMS[i % len(PROBLEMS)]
        results[i] = check_program(p["prompt"], p["canonical_solution"], p["test"], p["entry_point"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(r["passed"] for r in results)
    if INFO["privilege_drop"]:
        assert len({r["sandbox_uid"] for r in results}) == 4


# ------------------------------------------------------------------------------- extraction

def test_extract_code():
    assert extract_code("```python\na = 1\n```\ntext\n```python\nb = 2\n```") == "b = 2\n"
    assert extract_code("```\nc = 3\n```") == "c = 3\n"
    assert extract_code("```bash\nls\n```\n    return 1\n") == "```bash\nls\n```\n    return 1\n"
    assert extract_code("Sure!\n```python\ndef f():\n    return 1") == "def f():\n    return 1"
    assert extract_code("<think>```python\nx = 0\n```</think>\n```python\ny = 1\n```") == "y = 1\n"
    assert extract_code("<think>```python\nx = 0\n```</think>\nno code") == "x = 0\n"
    assert extract_code("    return 1\n") == "    return 1\n"


def test_build_completion():
    assert build_completion("def f(x):\n    return x\n", "f") == "\ndef f(x):\n    return x\n"
    assert build_completion("async def f(x):\n    return x\n", "f").startswith("\nasync def f")
    assert build_completion("    return x\n", "f") == "    return x\n"
    assert build_completion("y = x + 1\nreturn y", "f") == "    y = x + 1\n    return y"
    assert build_completion("def fx():\n    return 1\n", "f") == "    def fx():\n        return 1\n"


def test_verify_humaneval_body_and_empty():
    prob = PROBLEMS[2]  # the prompt defines a helper that the solution uses
    assert verify_humaneval(prob["canonical_solution"], prob)[1] is True
    assert verify_humaneval("   \n", prob) == (None, False)
    assert verify_humaneval("```python\n```", prob) == (None, False)


# ------------------------------------------------------------------------------- hostile code

def test_infinite_loop_times_out_promptly(no_leftovers):
    t0 = time.monotonic()
    r = run_hostile("    while True:\n        pass\n", timeout=1.5)
    elapsed = time.monotonic() - t0
    assert (r["passed"], r["status"]) == (False, "timeout")
    assert elapsed < 6, elapsed


def test_sleeping_program_times_out(no_leftovers):
    t0 = time.monotonic()
    r = run_hostile("    import time\n    time.sleep(60)\n", timeout=1.0)   # no CPU use: wall clock
    assert r["status"] == "timeout" and time.monotonic() - t0 < 6


def test_fork_bomb_is_contained(no_leftovers):
    t0 = time.monotonic()
    r = run_hostile("    import os\n    while True:\n        os.fork()\n", timeout=5)
    assert r["passed"] is False and r["status"] == "error"       # os.fork is disabled
    assert time.monotonic() - t0 < 10


@needs_uid_drop
def test_fork_bomb_bypassing_the_guard_is_contained(no_leftovers):
    """posix.fork gets past the Python guard: RLIMIT_NPROC (throw-away uid) caps the number of
    processes while it runs, and the clean-up kills them all, even one that left the session."""
    body = ("    import posix\n"
            "    while True:\n"
            "        try:\n"
            "            if posix.fork() == 0:\n"
            "                posix.setsid()\n"
            "        except OSError:\n"
            "            pass\n")
    peak, stop = [0], threading.Event()

    def monitor():
        while not stop.is_set():
            peak[0] = max(peak[0], len(sandbox_processes()))
            time.sleep(0.02)

    th = threading.Thread(target=monitor)
    th.start()
    t0 = time.monotonic()
    try:
        r = run_hostile(body, timeout=2.0, max_procs=8)
    finally:
        stop.set()
        th.join()
    assert r["status"] == "timeout" and time.monotonic() - t0 < 15
    assert 1 < peak[0] <= 8 + 1, peak[0]         # it did fork, but never past the limit
    assert H.live_processes_of(r["sandbox_uid"]) == []


def _sentinel():
    folder = Path(tempfile.mkdtemp(prefix="rlsft-sentinel-"))
    folder.chmod(0o755)                          # visible to the sandbox, not writable by it
    sentinel = folder / "sentinel.txt"
    sentinel.write_text("keep")
    sentinel.chmod(0o644)
    return folder, sentinel


# check() asserts that every attempt raised OSError (or TypeError: a function the guard set to
# None), i.e. the program ran to the end and reached nothing
ALL_REFUSED_TEST = ("def check(candidate):\n    out = candidate()\n"
                    "    assert out and all(o in ('OSError', 'TypeError') for o in out), out\n")


def _attempts(*lambdas: str) -> str:
    return ("    out = []\n"
            f"    for attempt in ({', '.join(lambdas)},):\n"
            "        try:\n"
            "            attempt()\n"
            "            out.append('done')\n"
            "        except OSError:\n"
            "            out.append('OSError')\n"
            "        except TypeError:\n"
            "            out.append('TypeError')\n"
            "    return out\n")


def test_file_access_is_blocked(no_leftovers):
    """The sentinel is world-readable in a world-readable folder: still neither readable nor
    deletable from the sandbox (no such file in its root; the audit hook without root)."""
    folder, sentinel = _sentinel()
    s, d = str(sentinel), str(folder)
    try:
        body = "    import os, shutil\n" + _attempts(
            f"lambda: open({s!r}).read()", f"lambda: os.remove({s!r})", f"lambda: os.unlink({s!r})",
            f"lambda: shutil.rmtree({d!r})", f"lambda: os.rename({s!r}, {s!r} + '.x')",
            f"lambda: os.listdir({d!r})")
        r = run_hostile(body, test=ALL_REFUSED_TEST)
        assert r["status"] == "passed", r        # it ran, and every attempt failed
        assert sentinel.read_text() == "keep"
        assert sorted(p.name for p in folder.iterdir()) == ["sentinel.txt"]
    finally:
        sentinel.unlink()
        folder.rmdir()


@needs_chroot
def test_file_access_bypassing_the_guard_is_blocked(no_leftovers):
    """Without the Python guards (posix.* directly): the private root alone hides the file."""
    folder, sentinel = _sentinel()
    s, d = str(sentinel), str(folder)
    try:
        body = "    import posix\n" + _attempts(
            f"lambda: open({s!r}).read()", f"lambda: posix.unlink({s!r})",
            f"lambda: posix.rmdir({d!r})", f"lambda: posix.rename({s!r}, {s!r} + '.x')",
            f"lambda: open({s!r}, 'w').write('gone')", f"lambda: open({d!r} + '/new.txt', 'w')",
            f"lambda: posix.chmod({s!r}, 0o777)", "lambda: open('/etc/passwd').read()")
        r = run_hostile(body, test=ALL_REFUSED_TEST, python_guards=False)
        assert r["status"] == "passed", r
        assert "audit-hook" not in " ".join(r["enforced"])
        assert sentinel.read_text() == "keep"
        assert sorted(p.name for p in folder.iterdir()) == ["sentinel.txt"]
        assert oct(sentinel.stat().st_mode & 0o777) == "0o644"
    finally:
        sentinel.unlink()
        folder.rmdir()


@needs_uid_drop
def test_cannot_signal_the_parent(no_leftovers):
    r = run_hostile(f"    import posix\n    posix.kill({os.getpid()}, 9)\n")
    assert r["status"] == "error" and "PermissionError" in r["detail"]
    # (and this test process is still alive to check it)


class _Server:
    """A listening socket on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def control(self) -> int:
        """Connect from this (unsandboxed) process: proves the server does accept connections."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):
            pass
        deadline = time.monotonic() + 3
        while self.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.accepted

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


NO_CONNECTION_TEST = ("def check(candidate):\n    out = candidate()\n"
                      "    assert 'connected' not in out, out\n")


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


def test_network_is_blocked(server, no_leftovers):
    body = (f"    import socket\n"
            f"    out = []\n"
            f"    addr = ('127.0.0.1', {server.port})\n"
            f"    for attempt in (lambda: socket.create_connection(addr, timeout=1),\n"
            f"                    lambda: socket.socket().connect(addr)):\n"
            f"        try:\n"
            f"            attempt()\n"
            f"            out.append('connected')\n"
            f"        except Exception as exc:\n"
            f"            out.append(type(exc).__name__)\n"
            f"    return out\n")
    r = run_hostile(body, test=NO_CONNECTION_TEST)
    assert r["status"] == "passed", r
    time.sleep(0.3)
    assert server.accepted == 0                  # the server saw nothing from the sandbox ...
    assert server.control() == 1                 # ... though it does accept connections


RAW_CONNECT = ("    import ctypes, struct\n"
               "    libc = ctypes.CDLL(None, use_errno=True)\n"
               "    fd = libc.socket(2, 1, 0)\n"
               "    if fd < 0:\n"
               "        return ['socket errno %d' % ctypes.get_errno()]\n"
               "    addr = (struct.pack('<H', 2) + struct.pack('!H', {port})\n"
               "            + bytes([127, 0, 0, 1]) + bytes(8))\n"
               "    rc = libc.connect(fd, addr, 16)\n"
               "    return ['connected' if rc == 0 else 'connect errno %d' % ctypes.get_errno()]\n")


def test_raw_network_calls_are_refused_by_the_guard(server, no_leftovers):
    r = run_hostile(RAW_CONNECT.format(port=server.port), test=NO_CONNECTION_TEST)
    assert r["status"] == "error" and "ctypes" in r["detail"], r     # ctypes is refused
    time.sleep(0.3)
    assert server.accepted == 0


@needs_netns
def test_network_bypassing_the_guard_is_blocked(server, no_leftovers):
    """Without the Python guards a raw libc connect gets past any socket block; the network
    namespace does not, and without the namespace the same program does connect (so the
    namespace is what stops it)."""
    r = run_hostile(RAW_CONNECT.format(port=server.port), test=NO_CONNECTION_TEST,
                    python_guards=False)
    assert r["status"] == "passed", r
    time.sleep(0.3)
    assert server.accepted == 0
    unprotected = run_hostile(RAW_CONNECT.format(port=server.port), test=NO_CONNECTION_TEST,
                              isolate_network=False, python_guards=False)
    assert unprotected["status"] == "failed"     # it connected: the bypass is real
    deadline = time.monotonic() + 3
    while server.accepted == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.accepted == 1


@pytest.mark.parametrize("body", [
    "    x = bytearray(8 * 1024 ** 3)\n",
    "    chunks = []\n    while True:\n        chunks.append(bytearray(10 ** 7))\n",
])
def test_memory_bomb_is_contained(body, no_leftovers):
    t0 = time.monotonic()
    r = run_hostile(body, memory_mb=256, timeout=10)
    assert (r["passed"], r["status"]) == (False, "error") and "MemoryError" in r["detail"], r
    assert time.monotonic() - t0 < 10


def test_big_file_and_output_flood_are_contained(no_leftovers):
    r = run_hostile("    open('big.bin', 'wb').write(bytes(8 << 20))\n", max_file_mb=1)
    assert r["status"] == "error" and "File too large" in r["detail"], r
    t0 = time.monotonic()
    r = run_hostile("    while True:\n        print('x' * 10000)\n", timeout=1.0)
    assert r["status"] == "timeout" and time.monotonic() - t0 < 6


def test_sandbox_info_reports_protections():
    assert "RLIMIT_AS" in INFO["enforced"] and "reliability-guard" in INFO["enforced"]
    assert INFO["audit_hook"] is True
    if os.geteuid() == 0:
        assert INFO["privilege_drop"] is True
        # the judge runs under a uid of its own, different from the candidate's
        judge_uid = [e for e in INFO["judge_enforced"] if e.startswith("uid=")]
        cand_uid = [e for e in INFO["enforced"] if e.startswith("uid=")]
        assert judge_uid and cand_uid and judge_uid != cand_uid
