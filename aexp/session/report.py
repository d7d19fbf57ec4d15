"""``aexp report FOLDER``: a recorded session drawn into figures (PNG at 300 dpi, a PDF beside each) and
one self-contained HTML page rendered from ``templates/report.html.j2`` (jinja2, autoescaped), with the
model refitted from the record (:func:`aexp.session.rebuild.rebuild`) at chosen steps for its maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..types import Candidates, Step, Survey
from .figures import (
    FIGURE_RC,
    Quantity,
    SurveyFrame,
    _discovery_figure,
    _latency_figure,
    _maps_figure,
    _registration_figure,
    _spectra_figure,
    _survey_figure,
    _target_figure,
    _travel_figure,
    _weights_figure,
    default_map_steps,
    discovery_curve,
    latency_table,
    map_quantities,
    pyplot,
    session_figure,
    spectra_to_show,
    target_quantity,
    travel_per_step,
)
from .truth import session_truth

if TYPE_CHECKING:
    from ..policies import Decision, Policy, SelectionContext
    from .store import SessionReader

__all__ = ["session_figure", "write_report", "render_report", "Panel", "discovery_curve", "latency_table",
           "travel_per_step", "session_truth"]

TEMPLATE = "report.html.j2"


@dataclass
class Panel:
    """One figure of the page: ``key`` (the section's id), a short ``title``, a ``caption`` that says
    how to read it, and the PNG it embeds (with the vector files written beside it)."""

    key: str
    title: str
    caption: str
    path: Path
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.files:
            self.files = [p.name for p in (self.path, self.path.with_suffix(".pdf")) if p.exists()]


class _MapCapture:
    """Wraps a policy to keep its mean / std / acquisition maps at chosen steps (decisions unchanged)."""

    def __init__(self, policy: Policy, steps: set[int]) -> None:
        self.policy, self.steps, self.name = policy, steps, policy.name
        self.maps: dict[int, dict[str, np.ndarray]] = {}
        self._steps: dict[int, int] = {}  # a decision with maps -> its step

    @property
    def beta(self) -> float:  # an operator's `set beta` reaches the wrapped policy
        return self.policy.beta  # type: ignore[attr-defined]

    @beta.setter
    def beta(self, value: float) -> None:
        self.policy.beta = value  # type: ignore[attr-defined]

    def select(self, ctx: SelectionContext) -> Decision:
        ctx.want_maps = ctx.step in self.steps
        decision = self.policy.select(ctx)
        if decision.maps is not None:
            self.maps[ctx.step] = decision.maps
            self._steps[id(decision)] = ctx.step
        return decision

    def rescore(self, decision: Decision, *args: Any) -> Decision:
        """The wrapped policy's (a decision taken again on the outcome in flight), keeping its maps."""
        rescore = getattr(self.policy, "rescore", None)
        new = decision if rescore is None else rescore(decision, *args)
        step = self._steps.pop(id(decision), None)
        if step is not None and new.maps is not None:
            self.maps[step] = new.maps
        return new


def _model_maps(reader: SessionReader, steps_wanted: list[int],
                progress: bool = False) -> tuple[Candidates | None, dict[int, dict[str, np.ndarray]]]:
    """Replay the session up to the last wanted step, refitting as the run did, keeping the maps
    (with ``progress``, a bar over the replayed steps: a long session takes minutes)."""
    from ..drift import read_registrations
    from ..live.channel import RecordedOperator
    from ..loop import campaign
    from .rebuild import rebuild, recorded_config
    from .replay import SessionInstrument
    from .store import MemoryRecorder

    if not steps_wanted:
        return None, {}
    cfg = recorded_config(reader).with_overrides(**{"stopping.wall_time_s": None})
    instrument = SessionInstrument(reader)
    from tqdm.auto import tqdm

    last = max(steps_wanted) + 1
    with tqdm(total=last, desc="refitting the model", unit="step", disable=not progress, leave=False) as bar, \
            rebuild(reader, instrument, config=cfg, progress=progress) as r:
        capture = _MapCapture(r.policy, set(steps_wanted))
        campaign(cfg, instrument, r.prepared, capture, MemoryRecorder(), r.seed, r.session_id,
                 on_step=lambda step, budget: bar.update(1), stop_after=last,
                 operator=RecordedOperator.of(reader.folder), registrations=read_registrations(reader.folder),
                 live_from=None)
    return r.prepared.candidates, capture.maps


def _operator_rows(reader: SessionReader, steps: list) -> list[tuple[str, str]]:
    """The operator's part of the run: its steps (marked on the survey) and every recorded action."""
    from ..live.channel import read_actions

    actions = [a for a in read_actions(reader.folder) if a.who == "operator"]
    if not actions:
        return []
    mine = [s.step for s in steps if s.phase == "operator"]
    rows = [("operator steps", f"{len(mine)}: steps {', '.join(str(k) for k in mine) or '-'} "
                               "(orange squares on the survey)")]
    for a in actions:
        detail = ", ".join(f"{k} {v}" for k, v in a.args.items() if k != "indices")
        if "indices" in a.args:
            detail = f"{len(a.args['indices'])} candidates" + (f", {detail}" if detail else "")
        rows.append((f"operator {a.what} ({a.status})",
                     f"before step {a.step}, {a.when}" + (f": {detail}" if detail else "")
                     + (f": {a.error}" if a.error else "")))
    return rows


def render_report(context: dict[str, Any]) -> str:
    """The page from ``templates/report.html.j2`` with autoescaping on: every string in ``context``
    is escaped unless it is a :class:`markupsafe.Markup` (only the spectra's inline SVG is).

    ``context``: ``title``, ``rows`` and ``run`` (``(key, value)`` pairs), ``panels`` (:class:`Panel`,
    their PNG base64-encoded by this function), ``spectra`` (``None`` or ``title``, ``svg``,
    ``caption``, ``files``), ``config_yaml`` and ``notes``.
    """
    import base64

    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("aexp.session", "templates"), autoescape=True,
                      undefined=StrictUndefined, keep_trailing_newline=True)
    panels = []
    for p in context["panels"]:
        png = p.path.read_bytes()
        panels.append({"key": p.key, "title": p.title, "caption": p.caption, "files": p.files,
                       "png": base64.b64encode(png).decode(), "width": _css_width(png)})
    return env.get_template(TEMPLATE).render({**context, "panels": panels})


def _css_width(png: bytes) -> int:
    """The width (CSS px, 96 per inch) a PNG of :data:`~.figures.PNG_DPI` has at its drawn size, so
    the page shows figures at their size on paper, not at their pixel count (IHDR width: bytes 16-20)."""
    from .figures import PNG_DPI

    return round(int.from_bytes(png[16:20], "big") * 96 / PNG_DPI)


def _inline_svg(path: Path):
    """The ``<svg>`` element of a matplotlib SVG file, safe to place in the page as it is (matplotlib
    escapes every text it writes), without the XML prolog a page cannot hold."""
    from markupsafe import Markup

    text = path.read_text()
    return Markup(text[text.index("<svg"):])  # our own figure: matplotlib escapes every text it writes


def _spectra_panel(reader: SessionReader, steps: list[Step], target: Quantity, windows: list[tuple[float, float]],
                   units: str, out: Path) -> dict[str, Any] | None:
    """The best measured spectrum and a few others (``spectra.svg`` inline, ``spectra.pdf`` beside)."""
    shown = [(s, sp) for s in spectra_to_show(steps) if (sp := reader.spectrum(s)) is not None]
    if not shown:
        return None
    path = _spectra_figure(shown, reader.manifest.spectrum_axis, units, target, windows, out / "spectra.svg")
    best = shown[0][0]
    return {"title": "measured spectra", "svg": _inline_svg(path), "files": [path.name, "spectra.pdf"],
            "caption": f"The best measured spectrum (black, step {best.step}) and {len(shown) - 1} others "
                       f"spread over the ranks of {target.name}, each labelled with its value; the shaded "
                       f"band is what the target reads ({target.detail or 'no window'}), and the signal "
                       "axis is scaled to the spectra around it (a stronger peak elsewhere runs off the top)."}


def _best_row(steps: list[Step], target: Quantity) -> str:
    """The best target rounded to 4 significant digits, with its unit, position (nm) and step."""
    ok = [s for s in steps if s.target is not None and np.isfinite(s.target)]
    if not ok:
        return "none measured"
    best = max(ok, key=lambda s: (float(s.target), -s.step))  # type: ignore[arg-type]
    x, y = (float(v) * 1e9 for v in best.position)
    return (f"{float(best.target):.4g} {target.unit}".strip()  # type: ignore[arg-type]
            + f" at x = {x:.1f} nm, y = {y:.1f} nm (step {best.step})")


def _run_rows(reader: SessionReader) -> list[tuple[str, str]]:
    """Instrument, date, versions and torch settings, from the manifest."""
    man = reader.manifest
    inst = man.instrument
    rows = [("instrument", f"{inst.name} (survey {' x '.join(str(v) for v in inst.survey_shape)}, "
                           f"channels {', '.join(inst.channels)})"),
            ("created", man.created or "not recorded"),
            ("pixel size", f"{man.survey.transform.pixel_size * 1e9:.4g} nm"),
            ("spectrum axis", f"{man.spectrum_axis.name}: {man.spectrum_axis.start:g} to "
                              f"{man.spectrum_axis.stop:g} {man.spectrum_axis.units} ({man.spectrum_axis.n} channels)"),
            ("torch", f"device {man.torch.device}, threads {man.torch.num_threads}, "
                      f"deterministic {man.torch.deterministic}")]
    rows += [(f"version: {pkg}", v) for pkg, v in sorted(man.versions.items())]
    return rows


def write_report(folder: str | Path, out: str | Path | None = None,
                 map_steps: list[int] | None = None, progress: bool = False) -> Path:
    """Figures of a recorded session and one self-contained ``report.html`` (images embedded).

    Every figure is a PNG at 300 dpi with a PDF beside it (``survey.png`` + ``survey.pdf``, ...);
    the measured spectra are ``spectra.svg`` (inline in the page) and ``spectra.pdf``. Maps and the
    survey share the survey's frame in nm, with a scale bar; colorbars name quantity and unit.

    Args:
        folder: the session (only read).
        out: where to write; default ``<folder>-report`` beside the session. Never inside it.
        map_steps: steps at which to draw the model's maps (refitted from the record);
            default :func:`default_map_steps`; ``[]`` for none.
        progress: show bars while the model is refitted from the record (the CLI does on a terminal).

    Returns:
        The path of ``report.html``.
    """
    from .rebuild import recorded_config
    from .store import SessionError, SessionReader

    reader = SessionReader(folder)
    out = Path(out) if out is not None else reader.folder.with_name(reader.folder.name + "-report")
    if out.resolve().is_relative_to(reader.folder.resolve()):
        raise SessionError(f"{out} lies inside the session folder; the report is written outside it")
    steps, man = reader.steps, reader.manifest
    wanted = default_map_steps(steps) if map_steps is None else list(map_steps)
    bad = [k for k in wanted if not 0 <= k < len(steps) or steps[k].phase != "policy"]
    if bad:
        raise UsageError(f"--maps-at: steps {bad} are not policy steps of this session "
                         f"(policy steps: {[s.step for s in steps if s.phase == 'policy']})")
    out.mkdir(parents=True, exist_ok=True)
    cfg = recorded_config(reader)
    notes = list(reader.dropped)
    extra = man.instrument.extra
    spectrum_units = str(extra.get("spectrum_units", ""))
    target = target_quantity(cfg.target.name, cfg.target.params, man.spectrum_axis, spectrum_units)
    windows = [tuple(v) for v in cfg.target.build().params.values() if isinstance(v, tuple)]
    candidates, maps = _model_maps(reader, wanted, progress)
    with pyplot().rc_context(FIGURE_RC):
        panels, spectra = _draw_panels(reader, steps, out, target, windows, spectrum_units,
                                       str(extra.get("survey_units") or "a.u."), candidates, maps,
                                       map_quantities(target, cfg.policy.acquisition_kind), wanted, notes)
    summary = reader.summary or {"status": "no summary.json (stopped hard?)"}
    rows = [("session", str(reader.folder)), ("config", cfg.name), ("seed", str(man.seed)),
            ("policy", cfg.policy.label.replace("/", " / ")), ("target", target.label),
            ("steps", f"{len(steps)} of a budget of {man.budget}"),
            ("status", str(summary.get("status"))),
            ("best target", _best_row(steps, target)),
            ("instrument", man.instrument.name), ("created", man.created or "not recorded")]
    rows += _operator_rows(reader, steps)
    import yaml

    page = out / "report.html"
    page.write_text(render_report({
        "title": f"aexp session {man.session_id}: {cfg.name}", "rows": rows, "run": _run_rows(reader),
        "panels": panels, "spectra": spectra, "notes": notes,
        "config_yaml": yaml.safe_dump(man.config, sort_keys=False, allow_unicode=True)}))
    return page


def _draw_panels(reader: SessionReader, steps: list[Step], out: Path, target: Quantity,
                 windows: list[tuple[float, float]], spectrum_units: str, survey_units: str,
                 candidates: Candidates | None, maps: dict[int, dict[str, np.ndarray]],
                 quantities: dict[str, Quantity], wanted: list[int],
                 notes: list[str]) -> tuple[list[Panel], dict[str, Any] | None]:
    """Every figure of the report, in the page's order; ``notes`` gets a line for each one left out."""
    from ..drift import read_registrations

    man = reader.manifest
    survey = Survey(reader.array("survey"), man.survey.transform, man.survey.channels)
    frame = SurveyFrame.of(survey.transform)
    where = "instrument x, y" if frame.xlabel == "x (nm)" else "distances along the (rotated) scan"
    panels = [Panel("survey", "survey and measured points (colour: step)",
                    f"Every survey channel on the sample's frame ({where}, nm; scale bar lower left); "
                    "white-edged dots are the measured points coloured by step, red crosses failed "
                    "measurements, orange squares the operator's points.",
                    _survey_figure(survey, steps, out / "survey.png", survey_units))]
    if maps and candidates is not None and candidates.grid_shape is not None:
        panels.append(Panel("maps", f"model maps at steps {sorted(maps)} (refitted from the record)",
                            f"Per chosen step: the model's predicted {target.name}, its uncertainty and the "
                            "acquisition score over the candidates, each cell centred on its candidate's "
                            "survey pixel; cyan dots are the points measured before that step, the green "
                            "star the point it chose.",
                            _maps_figure(maps, candidates, steps, out / "maps.png", survey, quantities)))
    elif wanted:
        notes.append("no model maps: the policy has no model, or the candidates are not a grid")
    spectra = _spectra_panel(reader, steps, target, windows, spectrum_units, out)
    panels.append(Panel("target", "target vs step",
                        f"{target.label} of each measurement (squares: the initial random ones) and the "
                        "best so far (line).", _target_figure(steps, out / "target.png", target)))
    panels.append(Panel("travel", "travel per step",
                        "Distance the probe moved from the previous measurement (nm).",
                        _travel_figure(steps, out / "travel.png")))
    registrations = read_registrations(reader.folder)
    if registrations:
        panels.append(Panel("registrations", "drift corrections (re-registration against the first survey)",
                            "The drift correction in force after each re-registration (nm); crosses mark "
                            "failed estimates, not applied.",
                            _registration_figure(registrations, out / "registrations.png")))
        notes += [f"re-registration before step {r.step} failed: {r.reason}" for r in registrations if not r.ok]
    truth = session_truth(reader, reader.array("candidates"), notes) if steps else None
    if truth is not None:
        panels.append(Panel("discovery", "discovery of the true top 1 % of candidates",
                            "Fraction of the candidates whose noiseless target (the instrument's hidden "
                            "truth) is in the top 1 % that were measured, after each measurement.",
                            _discovery_figure(discovery_curve(steps, truth), out / "discovery.png")))
    panels.append(Panel("latency", "latency per step (fit, select, move+measure, record+other)",
                        "Seconds per step: fitting the model, choosing the point, moving and measuring, "
                        "and the rest (mostly writing the previous record).",
                        _latency_figure(steps, out / "latency.png")))
    if any(s.weights for s in steps):
        panels.append(Panel("weights", "weight of each input group in the surrogate, per step",
                            "Leave-one-out weight of each input group: which inputs predicted the target "
                            "as data came.", _weights_figure(steps, out / "weights.png")))
    return panels, spectra
