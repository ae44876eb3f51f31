"""Running one fuzz case: the entry point in a forked child, bounded in time and memory.

Each case runs in a child forked from the test process (which imported, and warmed up, the
whole reading stack once), so that a crash of a C library (HDF5, SQLite, Arrow), a hang or a
runaway allocation is seen as that case's failure and the campaign goes on:

- time: the parent kills the child after ``CASE_SECONDS`` (first asking it, with SIGUSR1, to
  dump every thread's stack into its stderr, which the finding keeps);
- memory: the child's peak RSS over its start (``/proc/self/clear_refs`` + ``VmHWM``) must stay
  under ``CASE_MEMORY``; its address space is capped (RLIMIT_AS) at its size at fork plus
  ``AS_HEADROOM`` so that a failing bound is a MemoryError, not a machine out of memory.

The child reports what it saw as one JSON document on a pipe: findings (what must not happen;
see ``tests/fuzz/README.md``), the codes met, and counters.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import re
import resource
import select
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CODE = re.compile(r"TA-[EW]\d{3}")
CODE_EXACT = re.compile(r"TA-[EW]\d{3}\Z")
CASE_SECONDS = float(os.environ.get("TILED_ARCHIVE_FUZZ_CASE_SECONDS", "20"))
CASE_MEMORY = int(os.environ.get("TILED_ARCHIVE_FUZZ_CASE_MEMORY", str(1 << 30)))
AS_HEADROOM = 4 << 30
#: Arrays declared at most this big are also read whole.
SMALL = 16 << 20
MAX_NODES = 300
MAX_DEPTH = 70
_SITE = re.compile(r".*/site-packages/")
_ROOT = str(Path(__file__).resolve().parents[2]) + "/"


@dataclass
class Finding:
    """One thing that must not happen (an uncaught exception, a crash, a bound exceeded)."""

    entry: str  # validate, report, open, read, close, child
    where: str  # node path and action, or ""
    kind: str  # exception class, or timeout / crash / memory / uncoded-http / bad-code
    message: str
    frames: list[str] = field(default_factory=list)

    @property
    def signature(self) -> str:
        """What makes two findings the same bug: entry, kind, and the innermost frame of the
        project (not counting the ASGI middleware every request passes), else of Tiled, else
        the innermost frame at all; the message only when there is no frame."""
        own = [f for f in self.frames if f.startswith("tiled_archive/") and "asgi.py" not in f]
        tiled = [f for f in self.frames if f.startswith("tiled/")]
        place = (own or tiled or self.frames or [""])[-1]
        if not place:
            place = re.sub(r"\d+", "N", self.message)[:120]
        return f"{self.entry} {self.kind} @ {place}"

    def __str__(self) -> str:
        where = f" {self.where}" if self.where else ""
        frames = "".join(f"\n      {f}" for f in self.frames[-6:])
        return f"[{self.entry}{where}] {self.kind}: {self.message[:600]}{frames}"


def frames_of(exc: BaseException) -> list[str]:
    """``path:line in function`` of the traceback (from where it was caught to where it was
    raised), paths relative to the repo or site-packages; at most the first 4 and the 30
    innermost frames, keeping every frame of the project."""
    out = []
    for frame in traceback.extract_tb(exc.__traceback__):
        name = _SITE.sub("", frame.filename).replace(_ROOT, "")
        out.append(f"{name}:{frame.lineno} in {frame.name}")
    if len(out) > 34:
        middle = [f for f in out[4:-30] if f.startswith("tiled_archive/")]
        out = [*out[:4], *middle[-10:], "...", *out[-30:]]
    return out


def finding(entry: str, where: str, exc: BaseException) -> Finding:
    message = str(exc)[:2000]
    inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if inner is not None:
        message += f" (from {type(inner).__name__}: {str(inner)[:500]})"
    return Finding(entry, where, type(exc).__name__, message, frames_of(exc))


# -- The child -------------------------------------------------------------------------------


def _status(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def reset_thread_pools(*, wait: bool = False) -> None:
    """Forget the thread pools dask keeps per process (its threaded scheduler's default pool and
    one per calling thread): a forked child has none of their threads, and would wait forever
    on a pool it inherited."""
    threaded = sys.modules.get("dask.threaded")
    if threaded is None:
        return
    pools = [threaded.default_pool, *(p for d in threaded.pools.values() for p in d.values())]
    threaded.default_pool = None
    threaded.pools.clear()
    if wait:
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)


def run_in_child(job: Callable[..., dict], *args: Any, timeout: float, stderr: Path) -> dict:
    """``job(*args)`` in a forked child; its JSON-able result plus ``findings`` (as dicts),
    ``seconds`` and ``peak`` (bytes of RSS growth). Never raises for what the child does."""
    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # -- child: never returns
        status = 0
        try:
            os.close(read_end)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(err, 2)
            errfile = os.fdopen(2, "w", closefd=False)
            faulthandler.enable(file=errfile, all_threads=True)
            faulthandler.register(signal.SIGUSR1, file=errfile, all_threads=True)
            baseline = _status("VmRSS")
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            limit = _status("VmSize") + AS_HEADROOM
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            reset_thread_pools()
            _reset_peak()
            try:
                result = job(*args)
            except BaseException as exc:  # noqa: BLE001 -- MemoryError included
                result = {"findings": [asdict(finding("child", "", exc))]}
            result["peak"] = max(0, _status("VmHWM") - baseline)
            payload = json.dumps(result, default=str).encode()
            view = memoryview(payload)
            while view:
                written = os.write(write_end, view)
                view = view[written:]
        except BaseException:  # noqa: BLE001
            status = 3
        finally:
            os._exit(status)
    # -- parent
    os.close(write_end)
    chunks: list[bytes] = []
    timed_out = False
    deadline = started + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_end], [], [], remaining)
            if ready:
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_end)
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)  # stacks into its stderr
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, wait_status, _usage = os.wait4(pid, 0)
    seconds = time.monotonic() - started
    tail = _tail(stderr)
    result: dict = {}
    if timed_out:
        result = {
            "findings": [
                asdict(Finding("child", "", "timeout", f"over {timeout:.0f} s", _stacks(tail)))
            ]
        }
    else:
        try:
            result = json.loads(b"".join(chunks))
        except ValueError:
            how = (
                f"killed by signal {os.WTERMSIG(wait_status)}"
                if os.WIFSIGNALED(wait_status)
                else f"exit status {os.waitstatus_to_exitcode(wait_status)}"
            )
            result = {"findings": [asdict(Finding("child", "", "crash", how, _stacks(tail)))]}
    result["seconds"] = seconds
    result.setdefault("findings", [])
    result["stderr"] = tail
    peak = result.get("peak", 0)
    if peak > CASE_MEMORY:
        result["findings"].append(
            asdict(Finding("child", "", "memory", f"peak RSS grew by {peak / 2**20:.0f} MiB"))
        )
    if not timed_out and seconds > CASE_SECONDS:  # the deadline above plus reporting slack
        result["findings"].append(asdict(Finding("child", "", "timeout", f"{seconds:.1f} s")))
    return result


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def _stacks(text: str) -> list[str]:
    """The innermost frames of faulthandler's dump of the main thread (or of the first)."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("File ")]
    return [_SITE.sub("", line).replace(_ROOT, "") for line in lines[:8]][::-1]


# -- Jobs (run in the child) -------------------------------------------------------------------


def validate_job(path: str) -> dict:
    """``tiled_archive.validate(path)`` must return a Report; its problems must render."""
    import tiled_archive

    findings: list[Finding] = []
    codes: list[str] = []
    warnings.simplefilter("ignore")
    try:
        report = tiled_archive.validate(path)
    except Exception as exc:  # noqa: BLE001
        findings.append(finding("validate", "", exc))
    else:
        codes = sorted(report.codes)
        try:
            # What `tiled-archive validate` and `--json` print. (A path that is not UTF-8 is
            # reported with surrogate escapes; the CLI's console and JSON writer handle them.)
            for problem in report.problems:
                str(problem)
            json.dumps(report.to_json())
        except Exception as exc:  # noqa: BLE001
            findings.append(finding("report", "", exc))
        if report.form is None and codes != ["TA-E001"]:
            findings.append(Finding("validate", "", "bad-report", f"form None with codes {codes}"))
    return {"findings": [asdict(f) for f in findings], "codes": codes}


class _Walk:
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.codes: list[str] = []
        self.nodes = 0
        self.reads = 0

    def failed(self, where: str, exc: BaseException) -> None:
        """An exception while reading: acceptable only as a coded HTTP error from the Tiled
        client, or a KeyError naming the node a listing gave."""
        import httpx

        text = str(exc)
        if isinstance(exc, httpx.HTTPStatusError):
            found = CODE.search(text)
            if found is None:
                body = ""
                with contextlib.suppress(Exception):
                    body = exc.response.text[:1500]
                found = CODE.search(body)
                if found is None or exc.response.status_code >= 500:
                    self.findings.append(
                        Finding(
                            "read",
                            where,
                            "uncoded-http",
                            f"{text[:300]} -- body: {body}",
                            frames_of(exc),
                        )
                    )
                    return
            self.codes.append(found.group())
            return
        if isinstance(exc, KeyError) and where.endswith(" get") and _key_of(where) in text:
            self.codes.append("KeyError")
            return
        self.findings.append(finding("read", where, exc))

    def attempt(self, where: str, action: Callable[[], Any]) -> tuple[bool, Any]:
        self.reads += 1
        try:
            return True, action()
        except Exception as exc:  # noqa: BLE001
            self.failed(where, exc)
            return False, None


def _key_of(where: str) -> str:
    return where.rsplit(" ", 1)[0].rsplit("/", 1)[-1]


def _family(node: Any) -> str:
    value = node.structure_family
    return str(getattr(value, "value", value))


def _walk(record: _Walk, node: Any, path: str, depth: int) -> None:
    record.nodes += 1
    if record.nodes > MAX_NODES:
        return
    kind = _family(node)
    if kind == "container":
        ok, keys = record.attempt(f"{path or '/'} list", lambda: list(node))
        if not ok:
            return
        if depth >= MAX_DEPTH and keys:
            record.findings.append(
                Finding("read", path, "depth", f"still no error {MAX_DEPTH} levels down")
            )
            return
        for key in keys:
            child_path = f"{path}/{key}"
            ok, child = record.attempt(f"{child_path} get", lambda key=key: node[key])
            if ok:
                record.attempt(f"{child_path} metadata", lambda child=child: dict(child.metadata))
                _walk(record, child, child_path, depth + 1)
            if record.nodes > MAX_NODES:
                return
    elif kind == "array":
        _read_array(record, node, path)
    else:  # table, awkward, sparse, ...
        record.attempt(f"{path} read", node.read)


def _read_array(record: _Walk, node: Any, path: str) -> None:
    import math

    ok, shape = record.attempt(f"{path} structure", lambda: tuple(node.shape))
    if not ok:
        return
    ok, itemsize = record.attempt(f"{path} structure", lambda: node.dtype.itemsize)
    if not ok or 0 in shape:
        return
    reads = [("corner", tuple(slice(0, 1) for _ in shape))]
    if shape:
        reads.append(("end", tuple(slice(n - 1, n) for n in shape)))
    for action, where in reads:
        ok, _ = record.attempt(f"{path} {action}", lambda w=where: node[w] if w else node.read())
        if not ok:
            return
    if math.prod(shape) * itemsize <= SMALL:
        record.attempt(f"{path} full", node.read)


def open_job(path: str) -> dict:
    """``tiled_archive.open(path)``: an ArchiveError with a code, or a client whose every node
    lists and reads with values or coded HTTP errors; then ``close()``."""
    import stamina

    import tiled_archive
    from tiled_archive.reader import ArchiveWarning
    from tiled_archive.rules.problems import ArchiveError

    stamina.set_testing(True)  # Tiled's client retries 5xx answers for up to 45 s
    record = _Walk()
    warned: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            client = tiled_archive.open(path)
        except ArchiveError as err:
            if not CODE_EXACT.match(str(err.code)):
                record.findings.append(finding("open", "", err))
            else:
                record.codes.append(err.code)
            client = None
        except Exception as exc:  # noqa: BLE001
            record.findings.append(finding("open", "", exc))
            client = None
        if client is not None:
            try:
                _walk(record, client, "", 0)
                record.attempt("/ search", lambda: list(_search(client)))
            finally:
                try:
                    client.close()
                except Exception as exc:  # noqa: BLE001
                    record.findings.append(finding("close", "", exc))
        for item in caught:
            if isinstance(item.message, ArchiveWarning):
                code = item.message.problem.code
                warned.append(code)
                if not CODE_EXACT.match(code):
                    record.findings.append(
                        Finding("open", "", "bad-code", f"ArchiveWarning {item.message}")
                    )
    return {
        "findings": [asdict(f) for f in record.findings],
        "codes": sorted(set(record.codes)),
        "warnings": sorted(set(warned)),
        "opened": client is not None,
        "nodes": record.nodes,
        "reads": record.reads,
    }


def _search(client: Any) -> Any:
    from tiled.queries import FullText

    return client.search(FullText("silicon"))


def build_job(function: Callable[..., Any], *args: Any) -> dict:
    """Run ``function`` (seed building) in the child; failures propagate as findings."""
    function(*args)
    return {"findings": []}
