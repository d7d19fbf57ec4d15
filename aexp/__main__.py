"""``python -m aexp``: the same as the ``aexp`` command."""

import sys

from .cli import main

sys.exit(main())
