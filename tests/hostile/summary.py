"""The hostile corpus's results as one table: case, class, form, and what each entry point did.

    .venv/bin/pytest tests/test_hostile.py --junitxml=hostile.xml
    .venv/bin/python -m tests.hostile.summary hostile.xml

Each test records its result (``record_property``): validate's codes and time, open's refusal
or the first code the walk met, the memory-guarded reads' codes and peak RSS growth, extract's
exit status and codes, serve's refusal or read result.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

from . import generate as gen

COLUMNS = ("validate", "open/read", "memory", "extract", "serve", "verdict")
_ID = re.compile(r"^(?P<test>test_\w+)\[(?P<name>.+?)(?:-(?P<form>directory|zip))?\]$")
_COLUMN = {
    "test_validate": "validate",
    "test_open": "open/read",
    "test_read": "open/read",
    "test_slow_memory": "memory",
    "test_slow_extract": "extract",
    "test_slow_serve_read": "serve",
    "test_slow_serve_refuses": "serve",
}


def rows(xml_path: str) -> dict[tuple[str, str], dict[str, str]]:
    table: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for case in ET.parse(xml_path).iter("testcase"):
        match = _ID.match(case.get("name", ""))
        if not match or match["test"] not in _COLUMN:
            continue
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        failed = case.find("failure") is not None or case.find("error") is not None
        text = properties.pop("result", None) or "; ".join(
            f"{k} {v}" for k, v in properties.items()
        )
        if "seconds" in properties and "result" not in properties:
            text += f" ({properties['seconds']} s)"
        row = table[match["name"], match["form"] or "zip"]
        row[_COLUMN[match["test"]]] = text + (" FAILED" if failed else "")
        if failed:
            row["verdict"] = "FAILED"
        row.setdefault("verdict", "ok")
    return table


def main(argv: list[str]) -> int:
    table = rows(argv[0])
    print("| case | class | form | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for (name, form), row in sorted(table.items()):
        klass = gen.BY_NAME[name].klass if name in gen.BY_NAME else ""
        cells = [row.get(column, "") for column in COLUMNS]
        print(f"| {name} | {klass} | {form} | " + " | ".join(cells) + " |")
    failed = sum(row.get("verdict") == "FAILED" for row in table.values())
    print(f"\n{len(table)} case forms, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
