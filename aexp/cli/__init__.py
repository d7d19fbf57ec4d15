"""The ``aexp`` command: :mod:`.main` (check, run, bench and the dispatcher ``main``), :mod:`.session`
(replay, resume, export, report) and :mod:`.link` (serve, describe, keys)."""
