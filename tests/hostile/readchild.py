"""Read one node of an archive under a memory guard, in a process of its own; print JSON.

    python -m tests.hostile.readchild @ARCHIVE NODE=STEP[,STEP...] [NODE=...] [@ARCHIVE ...]

Steps: ``corner`` (a one-element slice), ``full`` (the whole node in ONE request: for arrays a
raw GET of the ``full`` link, so the Tiled client's own 100 MiB splitting does not hide what
the server does; for tables ``read()``). Before each step the peak-RSS counter is reset
(``/proc/self/clear_refs``), the baseline taken (VmRSS) and the address space capped at the
current size + ``HOSTILE_AS_HEADROOM`` (3 GiB) so a failing defence raises MemoryError rather
than taking the machine down. Each step reports its outcome, baseline and peak (VmHWM).
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
import warnings

HEADROOM = 3 << 30


def status(field: str) -> int:
    """A /proc/self/status field in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_step(node, step: str) -> dict:
    from tiled.client.utils import handle_error

    from tests.hostile.harness import CODE, describe, family, holds_canary

    kind = family(node)
    out: dict = {"step": step}
    try:
        if kind == "array":
            shape = tuple(node.shape)
            if step == "corner":
                value = node[tuple(slice(0, 1) for _ in shape)]
                out["canary"] = holds_canary(value)
            else:
                response = node.context.http_client.get(
                    node.item["links"]["full"], headers={"Accept": "application/octet-stream"}
                )
                handle_error(response)
                declared = math.prod(shape) * node.dtype.itemsize
                got = len(response.content)
                out["canary"] = holds_canary(response.content)
                if got != declared:
                    out["wrong_size"] = f"{got} bytes answered, {declared} declared"
        else:
            value = node.read()
            out["canary"] = holds_canary(value)
        out["status"] = "ok"
    except BaseException as exc:  # noqa: BLE001 -- MemoryError included
        text = describe(exc)
        found = CODE.search(text)
        out.update(
            status="code" if found else "raw", code=found.group() if found else None, text=text
        )
    return out


def coded(exc: BaseException) -> dict:
    from tests.hostile.harness import CODE, describe

    text = describe(exc)
    found = CODE.search(text)
    return {
        "status": "code" if found else "raw",
        "code": found.group() if found else None,
        "text": text,
    }


def read_archive(archive: str, plans: list[list[str]]) -> None:
    import tiled_archive

    started = time.monotonic()
    try:
        client = tiled_archive.open(archive)
    except BaseException as exc:  # noqa: BLE001
        for path, _ in plans:
            print(json.dumps({"archive": archive, "node": path, "open": coded(exc)}), flush=True)
        return
    opened_in = round(time.monotonic() - started, 2)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    for path, steps in plans:
        result: dict = {"archive": archive, "node": path, "opened_in": opened_in, "steps": []}
        try:
            node = client
            for key in path.split("/"):
                node = node[key]
        except BaseException as exc:  # noqa: BLE001
            result["get"] = coded(exc)
            print(json.dumps(result), flush=True)
            continue
        for step in steps.split(","):
            resettable = reset_peak()
            baseline = status("VmRSS")
            limit = status("VmSize") + HEADROOM
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            t0 = time.monotonic()
            try:
                out = run_step(node, step)
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            out.update(
                seconds=round(time.monotonic() - t0, 2),
                baseline=baseline,
                peak=status("VmHWM") if resettable else resource.getrusage(0).ru_maxrss * 1024,
                peak_resettable=resettable,
            )
            result["steps"].append(out)
        print(json.dumps(result), flush=True)
    client.close()


def main(argv: list[str]) -> int:
    """``@ARCHIVE`` then one ``NODE=STEP,STEP`` per node, for one archive or more: each
    node's result is one JSON line on stdout, printed as soon as it is known (a parent that
    must kill this process keeps the lines already printed)."""
    warnings.simplefilter("ignore")
    import stamina

    stamina.set_testing(True)
    archives: list[tuple[str, list[list[str]]]] = []
    for arg in argv:
        if arg.startswith("@"):
            archives.append((arg[1:], []))
        else:
            archives[-1][1].append(arg.split("=", 1))
    for archive, plans in archives:
        read_archive(archive, plans)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
