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


@pytest.fixture(scope="module")
def drawn(session, tmp_path_factory):
    """The report of the tiny session, maps at one step, with every figure object kept to read back."""
    import aexp.session.figures as figures

    figs, save = {}, figures.save_publication

    def keep(fig, path):
        figs[path.stem] = fig
        return save(fig, path)

    out = tmp_path_factory.mktemp("drawn") / "rep"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "save_publication", keep)
        page = write_report(session, out, map_steps=[4])
    return page, figs


def test_report_writes_a_pdf_beside_every_png_at_300_dpi_and_the_spectra_as_svg(drawn):
    from PIL import Image

    page, _ = drawn
    out = page.parent
    pngs = sorted(p.stem for p in out.glob("*.png"))
    assert pngs == ["discovery", "latency", "maps", "survey", "target", "travel"]
    assert sorted(p.stem for p in out.glob("*.pdf")) == sorted([*pngs, "spectra"])
    for stem in pngs:
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert Image.open(out / f"{stem}.png").info["dpi"] == pytest.approx((300, 300), abs=0.01)
    assert (out / "spectra.svg").read_text().lstrip().startswith("<?xml")


def _colorbar_labels(fig):
    return [ax.get_ylabel() or ax.get_xlabel() for ax in fig.axes if hasattr(ax, "_colorbar")]


def test_report_figures_are_in_nm_and_every_colorbar_names_quantity_and_unit(drawn):
    _, figs = drawn
    unit = "band_intensity (counts·eV)"
    assert _colorbar_labels(figs["survey"]) == ["survey: haadf (a.u.)", "measurement step"]
    assert _colorbar_labels(figs["maps"]) == [f"predicted {unit}", f"uncertainty (std) of {unit}",
                                              "acquisition: ucb (counts·eV)"]
    for name in ("survey", "maps"):
        images = [ax for ax in figs[name].axes if not hasattr(ax, "_colorbar")]
        assert {(ax.get_xlabel(), ax.get_ylabel()) for ax in images} == {("x (nm)", "y (nm)")}
        assert all(any(type(a).__name__ == "AnchoredSizeBar" for a in ax.artists) for ax in images)
        left, right = images[0].get_xlim()
        assert right - left == pytest.approx(32 * 1.0)  # the tiny twin: 32 px of 1 nm, edges included
    # measured points: white-edged markers on the survey
    dots = [c for c in figs["survey"].axes[0].collections if len(c.get_offsets())]
    assert np.allclose(dots[0].get_edgecolors()[:, :3], 1.0)
    assert figs["target"].axes[0].get_ylabel() == f"{unit}, window 1–3 eV"
    spectra = figs["spectra"].axes[0]
    assert spectra.get_xlabel() == "energy_loss (eV)" and spectra.get_ylabel() == "signal (counts)"
    assert spectra.patches[0].get_x() == pytest.approx(1.0)  # the target window, shaded


class _Parts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.stack, self.text = [], [], {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a and tag in ("section", "figure", "details"):
            self.ids.append(a["id"])
            self.stack.append(a["id"])

    def handle_endtag(self, tag):
        if tag in ("section", "figure", "details") and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        for key in self.stack[:1]:
            self.text[key] = self.text.get(key, "") + data


def test_report_page_shows_spectra_config_run_and_the_best_value(drawn, session):
    import yaml

    from aexp.session.store import SessionReader

    page, _ = drawn
    html = page.read_text()
    parts = _Parts()
    parts.feed(html)
    assert parts.ids[:2] == ["spectra", "survey"] and {"config", "run"} <= set(parts.ids)
    assert html.count("<svg") == 1 and "best measured spectrum" in parts.text["spectra"]
    recorded = SessionReader(session).manifest
    assert yaml.safe_load(parts.text["config"].split("(YAML)", 1)[1]) == recorded.config
    assert recorded.created in parts.text["run"] and recorded.versions["torch"] in parts.text["run"]
    best = max((s for s in SessionReader(session).steps if s.target is not None), key=lambda s: s.target)
    x, y = (v * 1e9 for v in best.position)
    assert (f"{best.target:.4g} counts·eV at x = {x:.1f} nm, y = {y:.1f} nm (step {best.step})"
            in html)
    assert "band_intensity (counts·eV), window 1–3 eV" in html
    for caption in ("scale bar", "green star", "shaded"):
        assert caption in html
    # a 300 dpi figure is shown at its size on paper (96 CSS px per inch), not at its pixel count
    from PIL import Image

    survey_px = Image.open(page.parent / "survey.png").size[0]
    assert f'width="{round(survey_px * 96 / 300)}"' in html


def test_report_escapes_a_malicious_target_name(session, tmp_path, monkeypatch):
    import json
    import shutil

    import aexp.targets

    evil = '<script>alert("x")</script> $x^$ &'  # a plugin's target could be named so; "$x^$" is not math
    monkeypatch.setitem(aexp.targets.TARGETS, evil, aexp.targets.band_intensity)
    folder = shutil.copytree(session, tmp_path / "s")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["target"]["name"] = evil
    (folder / "manifest.json").write_text(json.dumps(manifest))
    html = write_report(folder, tmp_path / "rep", map_steps=[]).read_text()
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; $x^$ &amp;" in html
    parsed = _Page()
    parsed.feed(html)
    assert parsed.sections == ["survey", "target", "travel", "discovery", "latency"]
