"""Real recordings in: spectrum images, STS grids and their survey images, read through the field's
readers (rosettasciio, SciFiReaders) into the full-grid data set of ``docs/grid-dataset.md``.

- :mod:`aexp.io.recordings`: what is inside a file, and one signal of it as a :class:`~aexp.griddata.GridDataset`;
- :mod:`aexp.io.survey`: pairing a survey image with the grid (registration, resampling);
- :mod:`aexp.io.stability`: how stable a recording's own top fraction is under its noise.
"""

from .recordings import RecordingError, import_recording, list_recording, read_recording

__all__ = ["RecordingError", "import_recording", "list_recording", "read_recording"]
