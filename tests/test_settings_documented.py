"""Every setting is documented in the README's settings table, and the table names no others."""

import re

from server.core.settings import Settings
from tests.conftest import ROOT


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Settings") :]
    table = table[: table.index("\n#", 1)]
    documented = set()
    for row in re.findall(r"^\| (`[A-Z0-9_]+`(?: / `[A-Z0-9_]+`)*) \|", table, re.M):
        documented |= set(re.findall(r"`([A-Z0-9_]+)`", row))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from the README table"
    assert documented - fields == set(), "README documents settings that do not exist"
