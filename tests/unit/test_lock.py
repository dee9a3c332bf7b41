"""requirements.lock (pip-compile --generate-hashes) must agree with requirements.txt, the file people edit.

A full re-resolution needs the network and minutes (`make lock-check`); this test catches the usual way
a lock goes stale in a second: a pin added, changed or removed in requirements.txt without `make lock`.
"""

from __future__ import annotations

import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)")


def direct_requirements() -> dict[str, Requirement]:
    reqs = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def locked() -> tuple[dict[str, str], set[str]]:
    """Pinned versions of the lock, and the names it says come straight from requirements.txt."""
    versions, direct, current = {}, set(), None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if m := PIN.match(line):
            current = canonicalize_name(m.group(1).split("[")[0])
            versions[current] = m.group(2)
        elif current and re.search(r"#\s+(via )?-r requirements\.txt", line):
            direct.add(current)
    return versions, direct


def test_every_requirement_is_locked_at_a_matching_version():
    versions, _ = locked()
    for name, req in direct_requirements().items():
        assert name in versions, f"{name} is in requirements.txt but not in requirements.lock: run `make lock`"
        assert req.specifier.contains(versions[name], prereleases=True), (
            f"requirements.txt asks {req}, requirements.lock has {versions[name]}: run `make lock`"
        )


def test_the_lock_has_no_direct_requirement_that_was_removed():
    _, direct = locked()
    stale = direct - set(direct_requirements())
    assert not stale, f"requirements.lock still lists {sorted(stale)} as from requirements.txt: run `make lock`"


def test_every_locked_package_has_hashes():
    text = (REPO / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1])
    for block in blocks:
        if PIN.match(block):
            assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]}"
