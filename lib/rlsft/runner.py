"""The runner behind ``run_all.sh``: runs the stage notebooks of a profile in numbered order with
papermill, skipping every stage whose inputs, parameters and code are unchanged.

    python -m rlsft.runner [--profile NAME] [--from STAGE | --only STAGE | --until STAGE | --figures-only]
                           [--force] [--dry-run] [--verbose] [--update-readme]

The console gets one line per stage (started, skipped and why, done with time, artifacts and peak
memory) and the progress bars of long loops; each notebook's own log goes to
``results/<profile>/logs/<stage>.log``. Executed notebooks go to ``results/<profile>/notebooks/``,
the manifest to ``results/<profile>/manifest.json``, the results summary to
``results/<profile>/SUMMARY.md`` (and into README.md only with ``--update-readme``). User errors
(unknown profile, key, parameter, flag, missing model, unwritable folder) end with one clear message
and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

from rlsft import config as C
from rlsft import console
from rlsft import plan
from rlsft import registry as R
from rlsft.completions import fingerprint
from rlsft.io import atomic_path, sha256_text, write_text
from rlsft.params import as_dict
from rlsft.report import backend_partner, build_report, readme_block, update_readme
from rlsft.store import Store, StoreLocked, code_hash, git_commit, notebook_source_hash, package_versions

log = logging.getLogger("rlsft.runner")

USAGE_EPILOG = """examples:
  ./run_all.sh                               run the organism profile end to end (skips what is done)
  ./run_all.sh --profile ci --force          rerun everything of the small test profile
  ./run_all.sh --from trajectories           rerun from a stage on (earlier stages still skip if done)
  ./run_all.sh --figures-only                redraw every figure from the saved tables
  ./run_all.sh --profile real-qwen-math-1.5b --until trajectories   data, samples and trajectories only
  ./run_all.sh --update-readme               also write the results block into README.md (for a commit)
  ./run_all.sh --profile paper-1.5b --dry-run   print the plan, touch nothing
"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # an unknown flag is an error with the usage, not a traceback
        self.print_usage(sys.stderr)
        raise UsageError(f"{message} (see --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="run_all.sh", description="Run the companion's notebooks for one profile.",
                epilog=USAGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="organism", help="profile name in profiles/ (default: organism)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--from", dest="from_stage", metavar="STAGE", help="run this stage and all later ones")
    sel.add_argument("--only", metavar="STAGE", help="run only this stage")
    sel.add_argument("--until", metavar="STAGE", help="run every stage up to and including this one")
    sel.add_argument("--figures-only", action="store_true", help="rerun only the figure notebooks from saved tables")
    p.add_argument("--force", action="store_true", help="rerun the selected stages even if up to date")
    p.add_argument("--dry-run", action="store_true", help="print stages, models and what would be skipped; touch nothing")
    p.add_argument("--results", default=str(C.REPO_ROOT / "results"), help="results root (default: results/)")
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: rlsft if registered, else python3)")
    p.add_argument("--verbose", action="store_true",
                   help="stream every notebook's cells and output to the console (default: logs/<stage>.log)")
    p.add_argument("--update-readme", action="store_true",
                   help="also rewrite the profile's results block in README.md (default: only SUMMARY.md)")
    return p


def _resolve_stage(name: str, infos) -> int:
    for i, info in enumerate(infos):
        if name in (info.stage, info.path.stem, f"{info.number:02d}", str(info.number)):
            return i
    raise C.ConfigError(f"unknown stage {name!r}; stages are {[i.stage for i in infos]}")


def select(infos, args) -> list:
    if args.only:
        return [infos[_resolve_stage(args.only, infos)]]
    if args.from_stage:
        return infos[_resolve_stage(args.from_stage, infos):]
    if getattr(args, "until", None):
        return infos[:_resolve_stage(args.until, infos) + 1]
    if args.figures_only:
        return [i for i in infos if i.kind == "figure"]
    return list(infos)


def stage_key(info, params: dict, profile: dict, store: Store) -> tuple[str | None, dict]:
    """The cache key of a stage, or ``None`` when an input stage has no record yet.

    ``code`` hashes every ``rlsft`` module the stage module and its notebook import, transitively
    (``info.code``, read from the source by :mod:`rlsft.deps`)."""
    parts = {"notebook": notebook_source_hash(info.path), "code": code_hash(info.code),
             "params": sha256_text(repr(sorted(params.items()))),
             "profile": sha256_text(repr({k: profile.get(k) for k in ("families", "seed", "device",
                                                                     "benchmark_folder")}))}
    imported = imported_fingerprint(profile)
    if imported:
        parts["completions"] = imported  # an edited completions file reruns every stage that reads it
    for dep in info.inputs:
        d = store.digest(dep)
        if d is None:
            return None, parts
        parts[f"input:{dep}"] = d
    return sha256_text(*[f"{k}={v}" for k, v in sorted(parts.items())]), parts


def imported_fingerprint(profile: dict) -> str | None:
    """sha256 over the contents of every ``completions:`` file of the profile (None if there are none)."""
    files = {f"{fam}/{v}/{b}": p for fam, v, _ in C.variant_specs(profile)
             for b, p in C.completion_files(profile, fam, v).items()}
    if not files or not all(p.is_file() for p in files.values()):
        return None
    return fingerprint(files)


def _kernel_name(requested: str | None) -> str:
    if requested:
        return requested
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        if "rlsft" in KernelSpecManager().find_kernel_specs():
            return "rlsft"
    except Exception:  # noqa: BLE001 - fall back to the default kernel
        pass
    return "python3"


def describe_models(profile: dict) -> list[str]:
    lines = []
    for fam, v, spec in C.variant_specs(profile):
        if "recipe" in spec:
            src = f"trained here: recipe {spec['recipe']}" + (f" from {spec['from']}" if "from" in spec else "")
        elif "completions" in spec:
            files = C.completion_files(profile, fam, v)
            src = f"imported completions: {len(files)} file(s), e.g. {next(iter(files.values()))}"
        else:
            src = f"{spec['model']}" + (f" @ {spec['revision']}" if spec.get("revision") else "")
        lines.append(f"  {fam:>12} {v:<7} {src}")
    return lines


def preflight(profile: dict, infos, dry_run: bool) -> None:
    """Stop before any work when a hub model that the stages in ``infos`` load is neither local nor
    cached (so a machine without the embedder can still train and sample)."""
    missing = plan.missing_models(profile, [i.stage for i in infos])
    absent = [f"{fam}/{v}: {p}" for fam, v, _ in C.variant_specs(profile)
              for p in C.completion_files(profile, fam, v).values() if not p.is_file()]
    if absent:
        raise C.ConfigError("these completions files do not exist:\n" + "\n".join(f"  - {a}" for a in absent)
                            + "\nfix the paths under 'completions:' in the profile (relative paths start at "
                            "the profile's folder)")
    if dry_run:
        for line in plan.plan_lines(profile):
            print(line)
        return
    if missing:
        raise C.ConfigError("these models are not available offline (no local path, not in the "
                            "Hugging Face cache):\n" + "\n".join(f"  - {m}" for m in missing)
                            + "\npre-download them on a machine with hub access, e.g.\n"
                            + "\n".join(f"  {plan.download_hint(m)}" for m in missing))


def dry_run(profile: dict, infos, chosen, store: Store, force: bool) -> int:
    """Print the models, the plan and what each selected stage would do; touch nothing."""
    print(f"profile: {profile['name']}  results: {store.root}")
    print("models:")
    print("\n".join(describe_models(profile)))
    preflight(profile, infos, dry_run=True)
    print("stages:")
    unknown_upstream = False
    for info in chosen:
        params = as_dict(R.effective_params(profile, info.stage))
        key, parts = stage_key(info, params, profile, store)
        idle = nothing_to_do(info, profile)
        if idle:
            verdict = f"would skip (nothing to do: {idle})"
        elif key is None or unknown_upstream:
            verdict = "would run (its inputs are not computed yet)"
        else:
            ok, why = store.fresh(info.stage, key, parts)
            verdict = "would skip (up to date)" if ok and not force else f"would run ({'forced' if force else why})"
        unknown_upstream = unknown_upstream or verdict.startswith("would run")
        print(f"  {info.path.name:<28} [{info.kind}] {verdict}")
    return 0


def nothing_to_do(info, profile: dict) -> str | None:
    """Why a stage has no work for this profile (e.g. train when no variant is trained here), or None."""
    check = getattr(info.module, "nothing_to_do", None)
    return check(profile) if check else None


def check_results_owner(store: Store, profile: dict) -> None:
    """A results folder belongs to one profile file: a different file of the same name (say a
    ``ci.yaml`` elsewhere) must not mix its results into ``results/ci``."""
    owner = store.load().get("profile_path")
    if owner and Path(owner) != Path(profile["path"]):
        raise C.ConfigError(f"{store.root} holds the results of the profile file {owner}, not of {profile['path']}; "
                            f"rename your profile file or pass --results to another folder")


def run_stage(info, profile: dict, store: Store, args, kernel: str, n: str, execute_stage=None) -> None:
    """Run one stage unless it is up to date or has nothing to do; record it in the manifest.
    ``execute_stage`` runs it (default :func:`execute`, the notebook through papermill)."""
    params = as_dict(R.effective_params(profile, info.stage))
    key, parts = stage_key(info, params, profile, store)
    if key is None:
        raise C.ConfigError(f"stage {info.stage!r} needs the outputs of {list(info.inputs)}, "
                            f"which are not computed yet: run them first (e.g. drop --only/--from)")
    idle = nothing_to_do(info, profile)
    if idle:
        store.record(info.stage, key, parts, {}, {"kind": info.kind, "skipped": idle, "parameters": params})
        log.info("%s stage %-14s skipped: nothing to do (%s)", n, info.stage, idle)
        return
    ok, why = store.fresh(info.stage, key, parts)
    if ok and not args.force:
        log.info("%s stage %-14s skipped: %s", n, info.stage, why)
        return
    logfile = store.root / "logs" / f"{info.stage}.log"
    log.info("%s stage %-14s running %s (%s); log: %s", n, info.stage, info.path.name,
             "forced" if args.force else why, _rel(logfile))
    t0 = time.time()
    with PeakMemory() as mem, console.stage_log(logfile, verbose=args.verbose):
        (execute_stage or execute)(info, profile, params, store.root, kernel, logfile)
    wall = time.time() - t0
    outputs = store.outputs(info.outputs)
    if not outputs:
        raise StageFailed(f"stage {info.stage!r} wrote nothing under {info.outputs}: see "
                          f"{store.root / 'notebooks' / info.path.name} and {logfile}")
    store.record(info.stage, key, parts, outputs, {
        "notebook": str(info.path.relative_to(C.REPO_ROOT)), "parameters": params,
        "seed": profile.get("seed"), "git_commit": git_commit(), "wall_time_s": round(wall, 2),
        "peak_rss_mb": mem.peak_mb, "code_modules": list(info.code),
        "package_versions": package_versions(), "kind": info.kind})
    log.info("%s stage %-14s done in %.1f s (%d artifacts, peak %.0f MB)", n, info.stage, wall, len(outputs),
             mem.peak_mb)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def finish(store: Store, profile: dict, update: bool) -> None:
    """The report, ``SUMMARY.md`` and (on request) the README block, from the saved tables."""
    path = build_report(store.root, profile)
    partner = backend_partner(profile, store.root.parent)
    write_text(store.root / "SUMMARY.md", f"# Results of profile `{profile['name']}`\n\n"
                                          + readme_block(store.root, partner) + "\n")
    log.info("report: %s; summary: %s", _rel(path), _rel(store.root / "SUMMARY.md"))
    if update:
        update_readme(C.REPO_ROOT / "README.md", store.root, profile["name"], partner)
        log.info("README.md: results block of %s rewritten", profile["name"])


def run(argv: list[str] | None = None, execute_stage=None) -> int:
    """The runner's command line. ``execute_stage`` replaces :func:`execute` (e.g.
    :func:`execute_in_process` on a machine without Jupyter); the manifest records the same."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout, force=True)
    profile = R.load_profile(args.profile)
    infos = list(R.STAGES)
    chosen = select(infos, args)
    store = Store(Path(args.results) / profile["name"])
    log.info("profile %s (%s): %d of %d stages selected; results in %s", profile["name"],
             " <- ".join(profile["chain"]), len(chosen), len(infos), _rel(store.root))
    if args.dry_run:
        return dry_run(profile, infos, chosen, store, args.force)
    preflight(profile, chosen, dry_run=False)  # only the models the selected stages load
    kernel = _kernel_name(args.kernel) if execute_stage is None else "in-process"
    total = time.time()
    with store.lock():
        check_results_owner(store, profile)
        store.set_profile_path(profile["path"])
        _remove_stale_temps(store.root)
        for i, info in enumerate(chosen, 1):
            run_stage(info, profile, store, args, kernel, f"[{i}/{len(chosen)}]", execute_stage)
        log.info("all selected stages done in %.1f s; results in %s", time.time() - total, _rel(store.root))
        finish(store, profile, args.update_readme)
    return 0


_STALE_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\..+)?$")  # rlsft.io.atomic_path's temp names


def _remove_stale_temps(root: Path) -> None:
    """Delete temp files a killed run left behind (``.<name>.<random>.tmp<suffix>``).

    Called while holding the results lock, so no other runner is writing them. Hidden folders
    (caches, sampling shards, which shard workers may write without the lock) are left alone.
    """
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if _STALE_TEMP.match(f):
                Path(folder, f).unlink(missing_ok=True)
                log.info("removed %s (left by an interrupted run)", Path(folder, f).relative_to(root))


def execute(info, profile: dict, params: dict, root: Path, kernel: str, logfile: Path | None = None) -> None:
    """Run one notebook with papermill; the executed copy lands atomically in ``notebooks/``.

    Long loops print text progress bars (``RLSFT_PROGRESS=text``, see :mod:`rlsft.progress`),
    which :mod:`rlsft.console` shows on the console."""
    import papermill as pm

    out = root / "notebooks" / info.path.name
    env_backup = dict(os.environ)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ["RLSFT_PROGRESS"] = "text"
    try:
        with atomic_path(out, ".ipynb") as tmp:
            try:
                pm.execute_notebook(str(info.path), str(tmp), kernel_name=kernel, log_output=True,
                                    progress_bar=False, cwd=str(info.path.parent),
                                    parameters={"profile": profile["path"] if profile["path"] != str(C.PROFILE_DIR / f"{profile['name']}.yaml") else profile["name"],
                                                "results_root": str(root.parent), **params})
            except pm.PapermillExecutionError as exc:
                failed = out.with_name(out.stem + ".failed.ipynb")
                os.replace(tmp, failed)
                raise StageFailed(f"stage {info.stage!r} failed in cell {exc.exec_count}: {exc.ename}: "
                                  f"{exc.evalue}\n  executed notebook: {failed}"
                                  + (f"\n  log: {logfile}" if logfile else "")) from None
    finally:
        os.environ.clear()
        os.environ.update(env_backup)


def execute_in_process(info, profile: dict, params: dict, root: Path, kernel: str = "",
                       logfile: Path | None = None) -> None:
    """:func:`execute` without a notebook: the stage module's ``run(ctx, params)`` in this process,
    with the context a notebook would open (no executed notebook is written)."""
    ctx = R.open_stage(info.stage, {"profile": profile["path"], "results_root": str(root.parent), **params})
    info.module.run(ctx, ctx.params)


class StageFailed(RuntimeError):
    pass


class PeakMemory:
    """Peak resident memory (MB) of this process's children (the notebook kernel) while a stage runs."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak_mb, self._stop = interval, 0.0, None

    def _poll(self):
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval):
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = round(self.peak_mb, 1)
        return False


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except UsageError as exc:
        print(f"run_all.sh: error: {exc}", file=sys.stderr)
        return 2
    except C.ConfigError as exc:
        print(f"run_all.sh: error: {exc}", file=sys.stderr)
        return 2
    except StoreLocked as exc:
        print(f"run_all.sh: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a results folder that cannot be written, a full disk, ...
        where = f" {exc.filename}" if exc.filename else ""
        print(f"run_all.sh: error: cannot write{where}: {exc.strerror or exc}; check that the results folder is "
              f"writable (or pass --results to another folder) and that the disk has space", file=sys.stderr)
        return 2
    except StageFailed as exc:
        print(f"run_all.sh: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("run_all.sh: interrupted; completed stages are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
