"""Module-owned settings: each config section is a frozen dataclass in the module that uses it, its fields
the section's keys, each with its default and meaning (``setting``) and the section's own checks
(``check``). The base config is generated from them (:mod:`sla_jax.defaults`), so a default is written
once; rules that span sections stay in :mod:`sla_jax.experiment.validation`. Standard library only (a leaf)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


def setting(default: Any, meaning: str = "") -> Any:
    """A settings field: its default and what it means (shown by ``train --help`` and beside the key)."""
    return dataclasses.field(default=default, metadata={"meaning": meaning})


def choice(key: str, value, allowed: Iterable) -> None:
    """A ValueError naming ``config.KEY`` when ``value`` is not one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"config.{key}={value!r} is not valid; choose one of {allowed}")


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of a section's settings: ``SECTION`` is its config name; :meth:`check` raises ValueError naming
    ``config.SECTION.KEY`` for the first invalid value."""

    SECTION: ClassVar[str] = ""

    @classmethod
    def from_mapping(cls, values: Mapping) -> Section:
        """The settings from a config section (a ConfigDict or dict with exactly these keys)."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})

    def check(self) -> None:
        """Nothing to check by default."""

    def key(self, name: str) -> str:
        return f"{self.SECTION}.{name}"


def defaults(cls: type[Section]) -> dict:
    """The section's keys and default values, in field order."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


def meanings(cls: type[Section]) -> dict[str, str]:
    """``{"SECTION.KEY": meaning}`` of the section's fields that state one."""
    return {
        f"{cls.SECTION}.{f.name}": f.metadata["meaning"] for f in dataclasses.fields(cls) if f.metadata.get("meaning")
    }
