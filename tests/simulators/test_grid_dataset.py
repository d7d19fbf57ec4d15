import io

import numpy as np

from aexp.griddata import load_grid
from simulators.grid_dataset import Progress, main


def test_grid_dataset_prints_plain_progress_lines_when_redirected(tmp_path, capsys):
    out = tmp_path / "grid.npz"
    assert main(["--out", str(out), "--stride", "4", "--option", "survey_pixels=20",
                 "--option", "n_particles=1", "--option", "size_range_m=[4e-9, 6e-9]"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"data set: {out}\n"  # stdout: only the path, as before
    lines = captured.err.splitlines()
    assert lines[0] == "measured 1 of 25 grid points (4 %)"
    assert lines[-1] == "measured 25 of 25 grid points (100 %)"
    assert len(lines) == 11 and "\r" not in captured.err  # one per tenth: a log stays readable
    assert load_grid(out).spectra.shape[:2] == (5, 5)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_grid_dataset_progress_is_a_bar_on_a_terminal():
    term = _Terminal()
    progress = Progress(term)
    for k in range(1, 41):
        progress(k, 40)
    assert progress.bar.n == 40 and progress.bar.total == 40
    progress.close()
    assert "measuring the grid" in term.getvalue() and "measured" not in term.getvalue()
    assert np.isclose(progress.bar.n / progress.bar.total, 1.0)
