"""Run many ``tiled-archive`` command lines, each in a process of its own, cheaply.

    python -m tests.hostile.clidriver JOBS.json RESULTS.json

Importing the command (and Tiled) takes seconds; this process imports it once and then forks
one child per job, which runs the console-script entry point (``tiled_archive.cli:main``) with
the job's arguments, exactly as ``tiled-archive ARGS...`` would after its imports: its stdout
and stderr go to a file, an exception escaping the command prints its traceback as Python
would, and the exit status is the command's. At most ``parallel`` children run at once; one
that outlives its timeout is killed.

A job is ``{"id", "argv", "output", "timeout"}``; a ``serve`` job also has ``"port"`` and
``"probe"`` (a URL path): once the server listens, the probe is fetched and its status and
body recorded, and the server stopped. Results: ``{id: {"status", "seconds", "listening",
"probe"}}`` (``status`` None when killed).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def child(job: dict) -> None:
    fd = os.open(job["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    from tiled_archive import cli

    sys.argv = ["tiled-archive", *job["argv"]]
    status = 0
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:  # noqa: BLE001 -- as the interpreter would report it
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((HOST, port)) == 0


def fetch(port: int, path: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=30) as response:
            return {"status": response.status, "body": response.read(2000).decode("latin-1")}
    except urllib.error.HTTPError as err:
        return {"status": err.code, "body": err.read(2000).decode("latin-1")}
    except Exception as exc:  # noqa: BLE001
        return {"status": None, "body": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str]) -> int:
    jobs_file, results_file = argv[0], argv[1]
    spec = json.loads(Path(jobs_file).read_text())
    jobs, parallel = list(spec["jobs"]), int(spec.get("parallel", 2))
    import warnings

    warnings.simplefilter("ignore")
    import tiled_archive.cli  # noqa: F401 -- the import every child shares
    import tiled_archive.serve.app  # noqa: F401
    import tiled_archive.writer  # noqa: F401

    running: dict[int, tuple[dict, float]] = {}
    results: dict[str, dict] = {}
    while jobs or running:
        while jobs and len(running) < parallel:
            job = jobs.pop(0)
            pid = os.fork()
            if pid == 0:
                child(job)
            running[pid] = (job, time.monotonic())
            results[job["id"]] = {"status": None, "listening": False, "probe": None}
        time.sleep(0.05)
        for pid, (job, started) in list(running.items()):
            result = results[job["id"]]
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                result["status"] = os.waitstatus_to_exitcode(wait_status)
            elif "port" in job and not result["listening"] and listening(job["port"]):
                result["listening"] = True
                result["probe"] = fetch(job["port"], job["probe"])
                os.kill(pid, signal.SIGTERM)
                continue
            elif time.monotonic() - started > job["timeout"]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                result["killed"] = True
                done = True
            else:
                continue
            if done:
                result["seconds"] = round(time.monotonic() - started, 2)
                del running[pid]
    with open(results_file, "w") as out:
        json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
