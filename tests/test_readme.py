"""The README's config reference names every config key (and no key that does not exist)."""

from __future__ import annotations

import dataclasses
import re
import typing

from conftest import REPO

from xrmodifier_hpc import config as cfgmod


def schema_keys(cls: type = cfgmod.Config, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in ("path", "text", "raw", "derived"):
            continue
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and tp is not cfgmod.Axis:
            keys |= schema_keys(tp, f"{name}.")
        else:
            keys.add(name)
    return keys


def readme_keys() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        names = re.findall(r"`([^`]+)`", first)
        head = names[0]
        keys.add(head.replace(".<param>", ""))
        for extra in names[1:]:  # "`a.b.c` / `.d`" -> a.b.d
            keys.add(head.rsplit(".", 1)[0] + extra)
    return keys


def test_config_reference_is_complete_and_current():
    documented, schema = readme_keys(), schema_keys()
    assert schema - documented == set(), "keys missing from the README's config reference"
    assert documented - schema == set(), "README documents keys the config does not have"
