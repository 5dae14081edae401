"""The categories under a data root: a category is a folder with ``train/good/``, found at most two levels
down (the root itself, its folders, or the folders of its datasets)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from launch import sweep as sweep_lib


@dataclasses.dataclass(frozen=True)
class Category:
    name: str  # unique among the benchmark's categories; the workdir's name
    root: str  # data.root
    category: str  # data.category


def is_category(folder: Path) -> bool:
    return (folder / "train" / "good").is_dir()


def discover(roots: Sequence[str], *, only: Sequence[str] = ()) -> list[Category]:
    """The categories under ``roots`` (a root may be a category, hold categories, or hold datasets of
    them), sorted by name within each root; ``only`` keeps those named (an unknown name is an error)."""
    found: list[Category] = []
    for root in roots:
        base = Path(root).expanduser().resolve()
        if not base.is_dir():
            raise sweep_lib.FolderError(f"--root={root}: {base} is not a folder")
        if is_category(base):
            candidates = [base]
        else:
            level1 = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
            candidates = [p for p in level1 if is_category(p)]
            candidates += sorted(
                q for p in level1 if not is_category(p) for q in p.iterdir() if q.is_dir() and is_category(q)
            )
        if not candidates:
            raise sweep_lib.FolderError(
                f"--root={root}: no category under {base} (a category is a folder with "
                "train/good/, at most two levels down)"
            )
        known = {(c.root, c.category) for c in found}
        found += [
            Category(name=p.name, root=str(p.parent), category=p.name)
            for p in candidates
            if (str(p.parent), p.name) not in known
        ]
    names = [c.name for c in found]
    clashing = {n for n in names if names.count(n) > 1}
    found = [dataclasses.replace(c, name=f"{Path(c.root).name}_{c.name}") if c.name in clashing else c for c in found]
    if only:
        missing = sorted(set(only) - {c.name for c in found})
        if missing:
            raise sweep_lib.SweepError(
                f"--category {missing} not found; the roots hold: {', '.join(c.name for c in found)}"
            )
        found = [c for c in found if c.name in only]
    return found
