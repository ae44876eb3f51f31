"""The hostile corpus (tests/hostile/): every entry point must answer each crafted archive with
its code, never with a traceback, a raw exception, a wrong answer or a touch outside it.

Entry points: ``tiled_archive.validate``; ``tiled_archive.open`` and reading every node through
the Tiled client in-process; reading big nodes in a memory-guarded subprocess (peak RSS under
baseline + 1 GiB); ``tiled-archive extract``; ``tiled-archive serve`` over loopback HTTP. The
canaries (files outside every archive that file-reference cases point at) are watched with
inotify throughout: any open of one fails the test of the case that owns it.

Tests named ``test_slow_*`` start processes (memory reads, CLI, servers) or build the
200,000-member ZIP; ``-k "not slow"`` leaves them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("inotify_simple")

import tiled_archive  # noqa: E402
from tiled_archive.rules.problems import ArchiveError  # noqa: E402
from tiled_archive.testing import HOST, free_port, listening, stop  # noqa: E402

from . import generate as gen  # noqa: E402
from .harness import (  # noqa: E402
    CODE,
    RAW_EXCEPTION,
    CanaryWatch,
    Walk,
    alternatives,
    describe,
    verdict,
    walk,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GIB = 1 << 30

BUILT = [c for c in gen.CASES if c.conformance is None]
COMBINED = [c for c in BUILT if c.combined]
OPEN_LEVEL = [c for c in gen.CASES if c.at_open]
SERVE_REFUSED = [c for c in OPEN_LEVEL if not c.conformance]
BIG = [c for c in BUILT if c.big]
ZIPPED = [c for c in gen.CASES if "zip" in c.forms]


def params(cases, forms=gen.FORMS):
    return [
        pytest.param(c.name, form, id=f"{c.name}-{form}")
        for c in cases
        for form in c.forms
        if form in forms
    ]


# -- Session fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def no_retries():
    """Tiled's client retries 5xx answers for up to 45 s: a hostile read must fail once."""
    import stamina

    stamina.set_testing(True)
    yield
    stamina.set_testing(False)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    saved = {k: os.environ.get(k) for k in ("SOURCE_DATE_EPOCH", "TILED_ARCHIVE_CACHE")}
    os.environ["TILED_ARCHIVE_CACHE"] = str(tmp_path_factory.mktemp("hostile-cache"))
    started = time.monotonic()
    built = gen.generate(tmp_path_factory.mktemp("hostile") / "corpus")
    built.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    if saved["SOURCE_DATE_EPOCH"] is None:
        os.environ.pop("SOURCE_DATE_EPOCH", None)
    yield built
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def watch(corpus):
    return CanaryWatch(corpus.root / "canary")


def outside_problems(corpus, name: str, touched: list[str]) -> list[str]:
    problems = [f"canary accessed: {event}" for event in touched]
    if (corpus.canary_root(name) / gen.PICKLE_MARKER).exists():
        problems.append("the pickle ran: the marker file next to the canaries exists")
    return problems


def fail_on(problems: list[str], context: str = "") -> None:
    if problems:
        pytest.fail("\n".join(problems) + (f"\n{context}" if context else ""), pytrace=False)


def test_corpus_is_small_and_quick(corpus):
    """Nothing over ~1 MB per case (its generation time is printed, not asserted: a loaded
    machine would fail a timed test)."""
    print(f"hostile corpus generated in {corpus.seconds:.1f} s")
    for item in BUILT:
        folder = corpus.root / item.name
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert size < 1_100_000, (item.name, size)
    assert set(json.loads((corpus.root / "corpus.json").read_text())["cases"]) == set(gen.BY_NAME)


# -- validate ---------------------------------------------------------------------------------


def leaks(where: str, texts) -> list[str]:
    """Python exception names shown to the user (the contract: only codes and words)."""
    found = sorted({name for text in texts for name in RAW_EXCEPTION.findall(text)})
    return [f"raw exception class name in the {where}: {found}"] if found else []


def validate_problems(item: gen.Case, report, seconds: float) -> list[str]:
    codes = set(report.codes)
    problems = [f"missing {need}" for need in item.validate if not alternatives(need) & codes]
    allowed = set().union(*(alternatives(c) for c in (*item.validate, *item.allowed)))
    if "*" not in allowed and codes - allowed:
        problems.append(f"unexpected {sorted(codes - allowed)}")
    if item.valid and not report.valid:
        problems.append("report is invalid; only warnings were expected")
    if not item.valid and item.validate and report.valid:
        problems.append("report is valid")
    if seconds > 10:
        problems.append(f"took {seconds:.1f} s")
    return problems


@pytest.mark.parametrize(("name", "form"), params(gen.CASES))
def test_validate(corpus, watch, name, form, record_property):
    item = gen.BY_NAME[name]
    with watch.untouched(name) as touched:
        started = time.monotonic()
        try:
            report = tiled_archive.validate(corpus.paths[name, form])
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"validate raised {describe(exc)}", pytrace=False)
        seconds = time.monotonic() - started
    record_property("result", " ".join(sorted(report.codes)) or "valid")
    record_property("seconds", round(seconds, 2))
    problems = validate_problems(item, report, seconds) + outside_problems(corpus, name, touched)
    problems += leaks("report", [str(p) for p in report.problems])
    fail_on(problems, "report: " + "; ".join(str(p) for p in report.problems)[:2000])


# -- open and read in-process --------------------------------------------------------------------

MINIMAL_VALUES = {
    "/sample/array:full": np.arange(12.0).reshape(4, 3),
    "/sample/table:read": {"x": [1, 2, 3], "y": [2.5, 3.5, 4.5]},
}


def same(value, expected) -> bool:
    if isinstance(expected, dict):
        return {k: list(value[k]) for k in expected} == expected
    return np.array_equal(np.asarray(value), expected)


@pytest.mark.parametrize(("name", "form"), params(OPEN_LEVEL))
def test_open(corpus, watch, name, form, record_property):
    """Catalog-, manifest- and ZIP-level cases: refused at open with the code (for a damaged
    ZIP of the conformance suite: refused, or every read gives the right value or the code)."""
    item = gen.BY_NAME[name]
    problems = []
    with watch.untouched(name) as touched:
        try:
            client = tiled_archive.open(corpus.paths[name, form])
        except ArchiveError as err:
            record_property("result", f"refused {err.code}")
            if err.code not in alternatives(item.at_open):
                problems.append(f"refused with {err.code}, expected {item.at_open}: {err}")
            problems += leaks("refusal", [str(err)])
        except Exception as exc:  # noqa: BLE001
            problems.append(f"open raised {describe(exc)}")
        else:
            try:
                record = walk(client, "")
            finally:
                client.close()
            record_property("result", f"opened; read: {record.first_code or 'values'}")
            if not item.conformance:
                problems.append(f"opened (expected {item.at_open}); walk:\n{record.report()}")
            else:
                problems += conformance_read_problems(item, record)
    fail_on(problems + outside_problems(corpus, name, touched))


def conformance_read_problems(item: gen.Case, record: Walk) -> list[str]:
    problems = verdict(record, item.at_open)
    problems = [p for p in problems if not p.startswith("no ")]  # right values are fine
    for key, expected in MINIMAL_VALUES.items():
        if key in record.values and not same(record.values[key], expected):
            problems.append(f"silent wrong answer at {key}: {record.values[key]!r}")
    if not record.values and not any(o.status == "code" for o in record.outcomes):
        problems.append("opened, read nothing, and named no code")
    return problems


@pytest.fixture(scope="session")
def in_process(corpus):
    """The combined archive of each form opened once (or the error opening it)."""
    opened: dict[str, object] = {}

    def get(form: str):
        if form not in opened:
            try:
                opened[form] = tiled_archive.open(corpus.combined[form])
            except Exception as exc:  # noqa: BLE001
                opened[form] = exc
        return opened[form]

    yield get
    for client in opened.values():
        if not isinstance(client, Exception):
            client.close()


CONTROL_VALUES = {
    "/control-benign/x:full": np.arange(48, dtype="u1").reshape(6, 8),
    "/control-benign/t:full": np.arange(64, dtype="u1").reshape(8, 8),
    "/control-benign/h/d:full": np.arange(10.0),
    "/control-benign/z:full": np.arange(24, dtype="i4").reshape(6, 4),
    "/control-benign/c:read": {"a": [1, 3], "b": [2, 4]},
}


def read_case(client, item: gen.Case) -> Walk:
    record = Walk()
    try:
        node = client[item.name]
    except Exception as exc:  # noqa: BLE001
        record.error(f"/{item.name}", "get", exc)
        return record
    return walk(node, f"/{item.name}", reads=not item.big, result=record)


@pytest.mark.parametrize(("name", "form"), params(COMBINED))
def test_read(corpus, watch, in_process, name, form, record_property):
    """Read-time cases, as nodes of the combined archive: every node walked, the first code
    met is the case's (big cases: listed only; their reads are test_slow_memory's)."""
    item = gen.BY_NAME[name]
    client = in_process(form)
    note = ""
    with watch.untouched(name) as touched:
        if isinstance(client, Exception):  # fall back on the case's own archive
            note = f"(the combined archive did not open: {describe(client)})"
            try:
                client = tiled_archive.open(corpus.paths[name, form])
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"open raised {describe(exc)} {note}", pytrace=False)
            try:
                record = read_case(client, item)
            finally:
                client.close()
        else:
            record = read_case(client, item)
    record_property("result", record.first_code or ("listed" if item.big else "values"))
    problems = verdict(record, None if item.big else item.read)
    if name == "control-benign":
        for key, expected in CONTROL_VALUES.items():
            if key not in record.values or not same(record.values[key], expected):
                problems.append(f"{key}: {record.values.get(key)!r}, expected {expected!r}")
    fail_on(problems + outside_problems(corpus, name, touched), f"walk:\n{record.report()}{note}")


# -- Big reads in a memory-guarded subprocess ------------------------------------------------------


def steps_of(item: gen.Case) -> list[str]:
    return [s for s, want in (("corner", item.corner), ("full", item.full)) if want != "skip"]


def run_reader(plans: list[tuple[str, Path, list[gen.Case]]], timeout: float) -> dict:
    """Read the big nodes of each (form, archive, cases) in ONE child; ``{form: {case:
    result}}``. A case the child never reported (it died or hung) gets ``died``."""
    command = [sys.executable, "-m", "tests.hostile.readchild"]
    for _, archive, items in plans:
        command.append(f"@{archive}")
        command += [f"{c.name}/{gen.FILE_STEM}={','.join(steps_of(c))}" for c in items]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
        stdout, note = done.stdout, f"exit status {done.returncode}: {done.stderr[-1500:]}"
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        note = f"killed after {timeout} s"
    forms = {str(archive): form for form, archive, _ in plans}
    results: dict[str, dict] = {form: {} for form, _, _ in plans}
    for line in stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[forms[result["archive"]]][result["node"].split("/")[0]] = result
    for form, _, items in plans:
        for item in items:
            results[form].setdefault(item.name, {"died": note})
    return results


def memory_reads(corpus) -> dict[str, dict]:
    """Every big node of the combined archive of both forms read in one child; a node whose
    child died or hung is read again alone, from its own archive, in a child of its own."""
    plans = [(form, corpus.combined[form], BIG) for form in gen.FORMS]
    results = run_reader(plans, timeout=60 + 20 * len(BIG) * len(plans))
    for form in gen.FORMS:
        for item in BIG:
            if "died" in results[form][item.name]:
                alone = run_reader([(form, corpus.paths[item.name, form], [item])], timeout=90)
                first = results[form][item.name]
                results[form][item.name] = {**alone[form][item.name], "first_try": first}
    return results


@pytest.fixture(scope="session")
def processes(corpus, watch, tmp_path_factory):
    """Everything that runs in processes of its own, at once (2 cores): the memory-guarded
    reader (one process for both forms) and one CLI driver forking ``tiled-archive extract``
    of every ZIP case and ``tiled-archive serve`` of every open-level case. Big cases have no
    canaries; a canary access during the CLI run is reported for its case (extract and serve
    of one case are not told apart)."""
    work = tmp_path_factory.mktemp("hostile-processes")
    starts = {c.name: watch.count(c.name) for c in gen.CASES}
    top = sorted(p.name for p in corpus.root.iterdir())
    jobs = extract_jobs(corpus, work) + refusal_jobs(corpus, work)
    started = time.monotonic()

    def timed(function, *args):
        begun = time.monotonic()
        return function(*args), time.monotonic() - begun

    with ThreadPoolExecutor(2) as pool:
        memory = pool.submit(timed, memory_reads, corpus)
        cli = pool.submit(timed, run_cli, jobs, work)
        (results_memory, memory_s), (results_cli, cli_s) = memory.result(), cli.result()
    results = {"memory": results_memory, "cli": results_cli}
    results["timings"] = {"memory": round(memory_s, 1), "cli": round(cli_s, 1)}
    (work / "timings.json").write_text(json.dumps(results["timings"]))
    results["seconds"] = time.monotonic() - started
    results["touched"] = {c.name: watch.since(c.name, starts[c.name]) for c in gen.CASES}
    results["top_changed"] = top != sorted(p.name for p in corpus.root.iterdir())
    for item in ZIPPED:
        folder = work / "extract" / item.name
        result = results["cli"][f"extract:{item.name}"]
        result["beside"] = sorted(p.name for p in folder.iterdir() if p.name != "out")
        result["out"] = folder / "out"
    return results


@pytest.mark.parametrize(("name", "form"), params(BIG))
def test_slow_memory(processes, name, form, record_property):
    item = gen.BY_NAME[name]
    result = processes["memory"][form][name]
    problems = []
    if "died" in result:
        problems.append(f"the reader died: {result['died']}")
    for stage in ("open", "get"):
        if stage in result:
            problems.append(f"{stage}: {result[stage]['text']}")
    wanted = {"corner": item.corner, "full": item.full}
    for step in result.get("steps", []):
        want = alternatives(wanted[step["step"]]) or {"ok"}
        got = step["code"] if step["status"] == "code" else step["status"]
        grown = step["peak"] - step["baseline"]
        record_property(step["step"], f"{got}, +{grown / 2**20:.0f} MiB")
        if step["status"] == "code":
            problems += leaks(f"{step['step']} error", [step["text"].split(": ", 1)[-1]])
        if got not in want:
            problems.append(
                f"{step['step']}: {got} (expected {'|'.join(sorted(want))}): "
                f"{step.get('text', 'read succeeded')}"
            )
        if grown >= GIB:
            base = step["baseline"] / GIB
            problems.append(
                f"{step['step']}: peak RSS grew {grown / GIB:.2f} GiB over the baseline "
                f"({base:.2f} GiB), limit 1 GiB"
            )
        if step.get("canary"):
            problems.append(f"{step['step']}: canary bytes read back")
        if step.get("wrong_size"):
            problems.append(f"{step['step']}: silent wrong answer: {step['wrong_size']}")
    fail_on(problems, json.dumps(result)[:3000])


# -- tiled-archive extract -----------------------------------------------------------------------


def run_cli(jobs: list[dict], work: Path, parallel: int = 2) -> dict[str, dict]:
    spec, results = work / "jobs.json", work / "results.json"
    spec.write_text(json.dumps({"jobs": jobs, "parallel": parallel}))
    subprocess.run(
        [sys.executable, "-m", "tests.hostile.clidriver", str(spec), str(results)],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    found = json.loads(results.read_text())
    for job in jobs:
        found[job["id"]]["output"] = Path(job["output"]).read_text(errors="replace")
    return found


def extract_jobs(corpus, work: Path) -> list[dict]:
    jobs = []
    for item in ZIPPED:
        folder = work / "extract" / item.name
        folder.mkdir(parents=True)
        jobs.append(
            {
                "id": f"extract:{item.name}",
                "argv": [
                    "extract",
                    str(corpus.paths[item.name, "zip"]),
                    str(folder / "out"),
                    "--quiet",
                ],
                "output": str(work / f"extract-{item.name}.log"),
                "timeout": 60,
            }
        )
    return jobs


@pytest.mark.parametrize("name", [c.name for c in ZIPPED])
def test_slow_extract(corpus, watch, processes, name, record_property):
    item = gen.BY_NAME[name]
    result = processes["cli"][f"extract:{name}"]
    output, status = result["output"], result["status"]
    problems = outside_problems(corpus, name, processes["touched"][name])
    if result.get("killed"):
        problems.append(f"killed after {result['seconds']} s")
    if RAW_EXCEPTION.search(output):
        problems.append("traceback or raw exception in the output")
    codes = set(CODE.findall(output))
    record_property("result", f"exit {status} " + " ".join(sorted(codes)))
    record_property("seconds", result.get("seconds"))
    if item.extract:
        if status != 1 or not codes & alternatives(item.extract):
            problems.append(
                f"exit {status}, codes {sorted(codes)}; expected exit 1 naming {item.extract}"
            )
    elif status == 1:
        if not codes & item.codes():
            problems.append(f"exit 1 naming {sorted(codes)}, none of the case's {item.codes()}")
    elif status == 0:  # a faithful copy: just as hostile, never laundered
        with watch.untouched(name) as touched:
            report = tiled_archive.validate(result["out"])
        problems += outside_problems(corpus, name, touched)
        # ZIP-structure codes (TA-E1xx) cannot survive into a directory; every other must.
        missing = [
            c
            for c in item.validate
            if not c.startswith("TA-E1") and not alternatives(c) & set(report.codes)
        ]
        if missing:
            problems.append(f"the extracted copy no longer reports {missing}: {report.codes}")
    else:
        problems.append(f"exit status {status}")
    if result["beside"]:
        problems.append(f"wrote beside its destination: {result['beside']}")
    if processes["top_changed"]:
        problems.append("something was written into the corpus folder during the extracts")
    fail_on(problems, f"exit {status} after {result.get('seconds')} s; output:\n{output[-3000:]}")


# -- tiled-archive serve -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def served(corpus, tmp_path_factory):
    """``tiled-archive serve`` of each form of the combined archive, both running at once."""
    logs = tmp_path_factory.mktemp("hostile-serve")
    servers = {}
    for form in gen.FORMS:
        port = free_port()
        log = logs / f"{form}.log"
        with open(log, "w") as sink:
            process = subprocess.Popen(
                [
                    str(BIN / "tiled-archive"),
                    "serve",
                    str(corpus.combined[form]),
                    "--public",
                    "--port",
                    str(port),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=logs,
            )
        servers[form] = (process, port, log)
    clients = {}
    try:
        for form, (process, port, log) in servers.items():
            deadline = time.monotonic() + 60
            while not listening(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    clients[form] = RuntimeError(f"did not start: {log.read_text()[-3000:]}")
                    break
                time.sleep(0.1)
            else:
                from tiled.client import from_uri

                try:
                    clients[form] = from_uri(f"http://{HOST}:{port}/api/v1")
                except Exception as exc:  # noqa: BLE001
                    clients[form] = exc
        yield {form: (clients[form], servers[form][2]) for form in gen.FORMS}
    finally:
        for process, _, _ in servers.values():
            stop(process)


@pytest.mark.parametrize(("name", "form"), params(COMBINED))
def test_slow_serve_read(corpus, watch, served, name, form, record_property):
    item = gen.BY_NAME[name]
    client, _ = served[form]
    if isinstance(client, Exception):
        pytest.fail(f"server: {describe(client)}", pytrace=False)
    with watch.untouched(name) as touched:
        record = read_case(client, item)
    record_property("result", record.first_code or ("listed" if item.big else "values"))
    problems = verdict(record, None if item.big else item.read)
    fail_on(problems + outside_problems(corpus, name, touched), f"walk:\n{record.report()}")


@pytest.mark.parametrize("form", gen.FORMS)
def test_slow_serve_log_is_clean(served, form):
    """After every read above: the server printed no traceback and no raw exception."""
    _, log = served[form]
    text = log.read_text(errors="replace")
    found = RAW_EXCEPTION.findall(text)
    assert not found, f"{sorted(set(found))} in the server's output:\n{text[-4000:]}"


def refusal_jobs(corpus, work: Path) -> list[dict]:
    """``tiled-archive serve`` of every open-level case (its ZIP form): it must refuse to
    start naming the code (or, if it starts, answer the read of the case's node with a clean
    error naming it)."""
    jobs = []
    for item in SERVE_REFUSED:
        form = "zip" if "zip" in item.forms else "directory"
        port = free_port()
        jobs.append(
            {
                "id": f"serve:{item.name}",
                "argv": [
                    "serve",
                    str(corpus.paths[item.name, form]),
                    "--public",
                    "--port",
                    str(port),
                ],
                "output": str(work / f"serve-{item.name}.log"),
                "timeout": 60,
                "port": port,
                "probe": f"/api/v1/array/full/{item.name}/{gen.FILE_STEM}",
            }
        )
    return jobs


@pytest.mark.parametrize("name", [c.name for c in SERVE_REFUSED])
def test_slow_serve_refuses(corpus, processes, name, record_property):
    item = gen.BY_NAME[name]
    result = processes["cli"][f"serve:{name}"]
    output = result["output"]
    codes = " ".join(sorted(set(CODE.findall(output + str(result.get("probe", ""))))))
    record_property(
        "result", ("started, read refused " if result["listening"] else "refused ") + codes
    )
    problems = outside_problems(corpus, name, processes["touched"][name])
    if RAW_EXCEPTION.search(output):
        problems.append("traceback or raw exception in the output")
    if result["listening"]:
        probe = result["probe"]
        if probe["status"] is None or probe["status"] < 400 or probe["status"] >= 500:
            problems.append(f"started, and the read answered {probe['status']}: {probe['body']}")
        elif not set(CODE.findall(probe["body"])) & alternatives(item.at_open):
            problems.append(f"started; the read's error names no {item.at_open}: {probe['body']}")
    elif result.get("killed"):
        problems.append("neither refused nor listened within 60 s")
    elif result["status"] == 0 or not set(CODE.findall(output)) & alternatives(item.at_open):
        problems.append(f"exit {result['status']} without naming {item.at_open}")
    fail_on(problems, f"output:\n{output[-3000:]}")


# -- A ZIP of 200,000 members --------------------------------------------------------------------


@pytest.fixture(scope="session")
def many_members(corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile-many") / "many.zip"
    started = time.monotonic()
    gen.many_members_zip(corpus.base_tree, path)
    return path, time.monotonic() - started


def test_slow_zip_200k_members_validates(many_members, record_property):
    """Finishes, with a report (its speed, 6-8 s on a quiet 2-core machine against the
    issue's 10 s, is measured, not asserted: a loaded CI machine is slower; the bound here
    only catches a validator gone quadratic)."""
    path, built = many_members
    started = time.monotonic()
    try:
        report = tiled_archive.validate(path)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"validate raised {describe(exc)}", pytrace=False)
    seconds = time.monotonic() - started
    record_property("seconds", round(seconds, 2))
    assert report.problems and seconds < 60, f"validate took {seconds:.1f} s"


def test_slow_zip_200k_members_open(many_members):
    path, _ = many_members
    started = time.monotonic()
    try:
        client = tiled_archive.open(path)
    except ArchiveError:
        pass
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"open raised {describe(exc)}", pytrace=False)
    else:
        client.close()
    seconds = time.monotonic() - started
    assert seconds < 20, f"open took {seconds:.1f} s"
