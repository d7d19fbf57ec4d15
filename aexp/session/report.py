"""``aexp report FOLDER``: a recorded session drawn into PNGs and one self-contained HTML page, with
the model refitted from the record (:func:`aexp.session.rebuild.rebuild`) at chosen steps for its maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError
from ..types import Candidates, Survey
from .figures import (
    _discovery_figure,
    _latency_figure,
    _maps_figure,
    _registration_figure,
    _survey_figure,
    _target_figure,
    _travel_figure,
    _weights_figure,
    default_map_steps,
    discovery_curve,
    latency_table,
    session_figure,
    travel_per_step,
)

if TYPE_CHECKING:
    from ..policies import Decision, Policy, SelectionContext
    from .store import SessionReader

__all__ = ["session_figure", "write_report", "discovery_curve", "latency_table", "travel_per_step"]


class _MapCapture:
    """Wraps a policy to keep its mean / std / acquisition maps at chosen steps (decisions unchanged)."""

    def __init__(self, policy: Policy, steps: set[int]) -> None:
        self.policy, self.steps, self.name = policy, steps, policy.name
        self.maps: dict[int, dict[str, np.ndarray]] = {}

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
        return decision


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


def _truth(reader: SessionReader, positions: np.ndarray, notes: list[str]) -> np.ndarray | None:
    """The noiseless target of every candidate, if the recorded instrument can tell it (a simulator
    or a full-grid data set) and is still the one recorded; else ``None`` and a note says why."""
    from ..instrument import GroundTruth, load_instrument
    from .rebuild import differences, recorded_config

    cfg = recorded_config(reader)
    try:
        inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=reader.manifest.seed)
    except (LookupError, ValueError, OSError) as exc:
        notes.append(f"no discovery curve: the instrument cannot be loaded here ({exc})")
        return None
    if not isinstance(inst, GroundTruth):
        notes.append(f"no discovery curve: instrument {cfg.instrument.driver!r} has no ground truth")
        return None
    if differences(inst.describe().to_dict(), reader.manifest.instrument.to_dict()):
        notes.append("no discovery curve: the instrument differs from the recorded one")
        return None
    return np.asarray(inst.truth(positions, cfg.target.build()), dtype=float)


def _operator_rows(reader: SessionReader, steps: list) -> list[tuple[str, str]]:
    """The operator's part of the run: its steps (marked on the survey) and every recorded action."""
    from ..live.channel import read_actions

    actions = [a for a in read_actions(reader.folder) if a.who == "operator"]
    if not actions:
        return []
    mine = [s.step for s in steps if s.phase == "operator"]
    rows = [("operator steps", f"{len(mine)}: steps {', '.join(str(k + 1) for k in mine) or '-'} "
                               "(orange squares on the survey)")]
    for a in actions:
        detail = ", ".join(f"{k} {v}" for k, v in a.args.items() if k != "indices")
        if "indices" in a.args:
            detail = f"{len(a.args['indices'])} candidates" + (f", {detail}" if detail else "")
        rows.append((f"operator {a.what} ({a.status})",
                     f"before step {a.step + 1}, {a.when}" + (f": {detail}" if detail else "")
                     + (f": {a.error}" if a.error else "")))
    return rows


def _html(title: str, rows: list[tuple[str, str]], figures: list[tuple[str, str, Path]], notes: list[str]) -> str:
    import base64
    import html

    out = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "td,th{padding:2px 10px;text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", '<table class="summary">',
    ]
    out += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows]
    out.append("</table>")
    for key, caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        out.append(f'<section id="{key}"><h2>{html.escape(caption)}</h2>'
                   f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"></section>')
    if notes:
        out.append('<section id="notes"><h2>notes</h2><ul>')
        out += [f"<li>{html.escape(n)}</li>" for n in notes]
        out.append("</ul></section>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(folder: str | Path, out: str | Path | None = None,
                 map_steps: list[int] | None = None, progress: bool = False) -> Path:
    """Figures of a recorded session and one self-contained ``report.html`` (images embedded).

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
    notes = list(reader.dropped)
    survey = Survey(reader.array("survey"), man.survey.transform, man.survey.channels)
    figures = [("survey", "survey and measured points (colour: step)", _survey_figure(survey, steps, out / "survey.png"))]
    candidates, maps = _model_maps(reader, wanted, progress)
    if maps and candidates is not None and candidates.grid_shape is not None:
        figures.append(("maps", f"model maps at steps {sorted(maps)} (refitted from the record)",
                        _maps_figure(maps, candidates, steps, out / "maps.png")))
    elif wanted:
        notes.append("no model maps: the policy has no model, or the candidates are not a grid")
    figures.append(("target", "target vs step", _target_figure(steps, out / "target.png")))
    figures.append(("travel", "travel per step", _travel_figure(steps, out / "travel.png")))
    from ..drift import read_registrations

    registrations = read_registrations(reader.folder)
    if registrations:
        figures.append(("registrations", "drift corrections (re-registration against the first survey)",
                        _registration_figure(registrations, out / "registrations.png")))
        notes += [f"re-registration before step {r.step} failed: {r.reason}" for r in registrations if not r.ok]
    truth = _truth(reader, reader.array("candidates"), notes) if steps else None
    if truth is not None:
        figures.append(("discovery", "discovery of the true top 1 % of candidates",
                        _discovery_figure(discovery_curve(steps, truth), out / "discovery.png")))
    figures.append(("latency", "latency per step (fit, select, move+measure, record+other)",
                    _latency_figure(steps, out / "latency.png")))
    if any(s.weights for s in steps):
        figures.append(("weights", "weight of each input group in the surrogate, per step",
                        _weights_figure(steps, out / "weights.png")))
    summary = reader.summary or {"status": "no summary.json (stopped hard?)"}
    cfg = recorded_config(reader)
    rows = [("session", str(reader.folder)), ("config", cfg.name), ("seed", str(man.seed)),
            ("policy", cfg.policy.label.replace("/", " / ")), ("target", cfg.target.name),
            ("steps", f"{len(steps)} of a budget of {man.budget}"),
            ("status", str(summary.get("status"))),
            ("best target", str(max((s.target for s in steps if s.target is not None), default=None)))]
    rows += _operator_rows(reader, steps)
    page = out / "report.html"
    page.write_text(_html(f"aexp session {man.session_id}: {cfg.name}", rows, figures, notes))
    return page
