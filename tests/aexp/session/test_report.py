import base64
import hashlib
from html.parser import HTMLParser

import numpy as np
import pytest

from aexp.cli.main import main
from aexp.loop import CampaignResult
from aexp.session.report import discovery_curve, latency_table, session_figure, travel_per_step, write_report
from aexp.session.store import SessionError
from aexp.types import Candidates, PixelTransform, Step, Survey


@pytest.fixture(scope="module")
def session(tiny_session):
    return tiny_session(2, policy={"acquisition": "ucb"})[0]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.images, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        if tag == "img":
            self.images.append(a["src"])
        for key in ("src", "href"):
            if key in a and not a[key].startswith("data:"):
                self.external.append(a[key])


def _digest(folder):
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


def test_report_is_one_self_contained_page_and_leaves_the_session_alone(session, tmp_path):
    before = _digest(session)
    page = write_report(session, tmp_path / "rep", map_steps=[3, 7])
    assert _digest(session) == before
    parsed = _Page()
    parsed.feed(page.read_text())
    assert parsed.sections == ["survey", "maps", "target", "travel", "discovery", "latency"]
    assert parsed.external == []  # nothing to fetch: every image is embedded
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in (tmp_path / "rep").glob("*.png")} == {
        "survey.png", "maps.png", "target.png", "travel.png", "discovery.png", "latency.png"}
    assert "model maps at steps [3, 7]" in page.read_text()


def test_report_cli_default_folder_and_bad_steps(session, capsys):
    assert main(["report", str(session), "--maps-at", "1"]) == 2  # step 1 is an initial (random) one
    assert "not policy steps" in capsys.readouterr().err
    assert main(["report", str(session)]) == 0
    assert (session.parent / "s-report" / "report.html").is_file()
    with pytest.raises(SessionError, match="inside the session"):
        write_report(session, session / "r")


def _step(k, index, x, status="ok", timings=None):
    return Step(step=k, index=index, position=(x, 0.0), pixel=(0.0, 0.0), target=1.0 if status == "ok" else None,
                status=status, phase="policy", timings=timings or {})


def test_curves_from_steps():
    steps = [_step(0, 5, 0.0), _step(1, 1, 3e-9, status="failed"), _step(2, 0, 7e-9)]
    assert travel_per_step(steps).tolist() == pytest.approx([0.0, 3e-9, 4e-9])
    truth = np.arange(200.0)[::-1]  # candidates 0 and 1 are the true top 1 %
    assert discovery_curve(steps, truth).tolist() == [0.0, 0.0, 0.5]  # a failed measurement finds nothing
    lat = latency_table([_step(0, 0, 0.0, timings={"fit_s": 1.0, "select_s": 0.5, "decision_s": 2.0, "measure_s": 3.0})])
    assert {k: v[0] for k, v in lat.items()} == {"fit": 1.0, "select": 0.5, "move+measure": 3.0, "record+other": 0.5}


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
