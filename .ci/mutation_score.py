"""Mutation score per core module, from the last `mutmut run`, equivalent mutants left out.

Run by `make mutation` after `mutmut run`. A mutant is killed when a test failed
(or it timed out, or mypy refused it); equivalent mutants, listed with the reason
in tests/mutation-equivalents.md, change nothing a user can observe and are not
counted. Modules whose mutants were not run (a narrowed `make mutation
MUTANTS=...`) are left out. Exits 1 when a module scores under the target.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

TARGET = 90.0
KILLED = {"killed", "timeout", "caught by type check"}
EQUIVALENTS = Path(__file__).parent.parent / "tests" / "mutation-equivalents.md"


def equivalents() -> set[str]:
    """Mutant names listed as equivalent: list items that start with the name in backticks."""
    return set(re.findall(r"^- `([^`]+)`", EQUIVALENTS.read_text(), flags=re.MULTILINE))


def main() -> int:
    """Print the score per module and the surviving mutants; 1 if a module is under target."""
    mutmut = Path(sys.executable).with_name("mutmut")
    listing = subprocess.run(
        [mutmut, "results", "--all", "true"], check=True, capture_output=True, text=True
    ).stdout
    skip = equivalents()
    statuses: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    survivors: dict[str, list[str]] = collections.defaultdict(list)
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name:
            continue
        module = name.rsplit(".", 1)[0]
        if name in skip:
            statuses[module]["equivalent"] += 1
            continue
        statuses[module][status] += 1
        if status not in KILLED and status != "not checked":
            survivors[module].append(f"{name}: {status}")
    failed = False
    for module, counts in sorted(statuses.items()):
        checked = sum(
            n for status, n in counts.items() if status not in {"not checked", "equivalent"}
        )
        if not checked or counts["not checked"]:
            continue
        killed = sum(counts[status] for status in KILLED)
        score = 100.0 * killed / checked
        failed |= score < TARGET
        print(
            f"{module}: {score:.1f} % killed ({killed} of {checked}; "
            f"{counts['equivalent']} equivalent left out)"
        )
        for survivor in survivors[module]:
            print(f"    {survivor}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
