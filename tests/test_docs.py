"""The configuration reference in the README names every setting the code reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def settings_read_by_code() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("functions/*.py")]:
        text = path.read_text(encoding="utf-8")
        names.update(re.findall(r'"((?:KEYSTEWARD_[A-Z0-9_]+)|AzureWebJobsStorage)"', text))
        names.update(re.findall(r"%([A-Z][A-Z0-9_]+)%", text))
    return names


def test_every_setting_is_in_the_configuration_reference():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Za-z0-9_]+)` \|", section, flags=re.MULTILINE))
    read = settings_read_by_code()
    assert len(read) > 20
    assert read - documented == set()


def test_readme_names_the_test_command_and_ci_runs_it():
    assert "make test" in (ROOT / "README.md").read_text(encoding="utf-8")
    # CI does nothing `make` does not do itself: no installs of its own, only make targets.
    commands = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    makes = [c.split()[1:] for c in commands if c.startswith("make ")]
    assert all(c.startswith(("set ", "cd ", "make ")) for c in commands), commands
    assert makes and "test" in makes[-1] and {t for m in makes for t in m} <= {"lint", "test"}
