"""``python -m aexp.live FOLDER HOST PORT``: the live page's server as a child of ``aexp run --live``
(:class:`aexp.live.app.LiveServer`); a user runs ``aexp watch`` instead."""

import sys

from .app import serve_child

sys.exit(serve_child(sys.argv[1:]))
