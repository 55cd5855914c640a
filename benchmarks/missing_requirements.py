"""What this project needs that the running Python lacks: its dependencies and the ``bench`` extra
(read from pyproject.toml), followed through every installed distribution's own requirements.

    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/missing_requirements.py   # one line per problem; exit 1 if any

Made for the GPU machine, where the checkout is not installed (so pip never checked its needs) and
wheels go in with ``--no-deps``: a replica of that image here showed TRL's datasets without xxhash
and plotly 7 without narwhals, each found only minutes into a device run.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def project_requirements(extras: tuple[str, ...] = ("bench",)) -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    specs = project["dependencies"] + [s for e in extras for s in project["optional-dependencies"][e]]
    return [Requirement(s) for s in specs]


def problems(roots: list[Requirement], needed_by: str = "preference-harness") -> list[str]:
    """One line per requirement, direct or transitive, that is not installed or not in its range."""
    found: list[str] = []
    seen: set[str] = set()
    todo = [(req, needed_by) for req in roots]
    while todo:
        req, parent = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            found.append(f"{req} (needed by {parent}): not installed")
            continue
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            found.append(f"{req} (needed by {parent}): {dist.version} installed")
        environments = [{"extra": e} for e in ("", *req.extras)]  # what `pip install name[extras]` would add
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate(env) for env in environments):
                todo.append((sub, dist.metadata["Name"]))
    return sorted(found)


def main() -> int:
    lines = problems(project_requirements())
    print("\n".join(lines) if lines else "every requirement is installed")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
