import numpy as np

from aexp.loop import CampaignResult
from aexp.report import session_figure
from aexp.types import Candidates, PixelTransform, Step, Survey


def _steps(pixels: np.ndarray) -> list[Step]:
    return [
        Step(step=k, index=k, position=(0.0, 0.0), pixel=(float(r), float(c)), target=float(k),
             status="ok", phase="initial" if k < 2 else "policy", best_so_far=float(k))
        for k, (r, c) in enumerate(pixels)
    ]


def test_session_figure_draws_scattered_candidates(tmp_path):
    """Atom-centred candidates have no grid: the model maps are drawn as dots, not an image."""
    rng = np.random.default_rng(0)
    px = rng.uniform(0, 31, size=(40, 2))
    cands = Candidates(positions=px * 1e-10, pixels=px, patches=np.zeros((40, 1, 4, 4), np.float32))
    survey = Survey(image=rng.random((1, 32, 32)), transform=PixelTransform.square(1e-10), channels=("haadf",))
    maps = {"mean": rng.random(40), "std": rng.random(40), "acquisition": rng.random(40)}
    result = CampaignResult(steps=_steps(px[:5]), maps=maps)
    path = session_figure(tmp_path, survey, cands, result)
    assert path.exists() and path.stat().st_size > 10_000
