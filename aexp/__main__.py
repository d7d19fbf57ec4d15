"""``python -m aexp``: the same as the ``aexp`` command."""

import sys

from .cli.main import main

sys.exit(main())
