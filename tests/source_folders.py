"""Keep the repo's source folders from being imported under their folder names.

pytest puts the repo root on sys.path (`pythonpath = ["."]`, so tests can import `tests.*` and
`bench.*`); without this, `import proxy` would load a second copy of runtap's relay beside the
installed `runtap.proxy`, with its own module state. The installed names are the only ones.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

FOLDERS = frozenset({"settings", "proxy", "analytics", "demo", "dashboards"})


class SourceFolderGuard(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in FOLDERS:
            raise ModuleNotFoundError(
                f"import runtap.{fullname}, not {fullname}: the repo folder {fullname.partition('.')[0]}/ "
                "installs as runtap.*", name=fullname)
        return None


def install() -> None:
    if not any(isinstance(f, SourceFolderGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFolderGuard())
