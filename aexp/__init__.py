"""aexp: autonomous microscope experiments."""

from ._compat import install as _install_moved_names

_install_moved_names()
