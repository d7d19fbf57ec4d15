"""Old import paths of modules that moved when the package was grouped by concept.

``import aexp.replay`` still works and gives :mod:`aexp.session.replay` itself (the same module
object, so monkeypatching either name patches both), with a DeprecationWarning naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "aexp.replay": "aexp.session.replay",
    "aexp.export": "aexp.session.export",
    "aexp.report": "aexp.session.report",
    "aexp.session_commands": "aexp.cli.session",
    "aexp.link_cli": "aexp.cli.link",
    "aexp.wire": "aexp.link.wire",
    "aexp.serve": "aexp.link.serve",
    "aexp.dkl": "aexp.surrogates.dkl",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module is the moved one, already executed."""


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
