"""The configuration reference, ``docs/configuration.md``, written from the config classes themselves.

Every key, type, default and description comes from the pydantic models of :mod:`aexp.config` and
every target's parameters from the signatures in :data:`aexp.targets.TARGETS`, so the page cannot
drift from what ``aexp check`` accepts. ``tests/test_docs.py`` fails when the committed page differs
from :func:`render`.

Regenerate after changing a config class::

    python -m aexp.config_reference --out docs/configuration.md
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import (
    KINDS,
    CandidatesConfig,
    DriftConfig,
    ExperimentConfig,
    InstrumentConfig,
    NeighbourCount,
    RecordingConfig,
    StagnationConfig,
    StoppingConfig,
    TravelConfig,
)
from .targets import TARGETS

__all__ = ["render", "main", "model_section"]

#: The page's sections in order: a section class, or the name of a kind-switched family of :data:`KINDS`.
SECTIONS: tuple[tuple[str, type[BaseModel] | str], ...] = (
    ("instrument", InstrumentConfig),
    ("candidates", CandidatesConfig),
    ("embedder", "embedder"),
    ("surrogate", "surrogate"),
    ("surrogate.neighbour_counts[]", NeighbourCount),
    ("policy", "policy"),
    ("policy.acquisition", "acquisition"),
    ("policy.travel", TravelConfig),
    ("stopping", StoppingConfig),
    ("stopping.stagnation", StagnationConfig),
    ("recording", RecordingConfig),
    ("drift", DriftConfig),
)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        if all(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
            return "mapping with a `kind`"
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.get_default(call_default_factory=True)
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, float):
        value = float(f"{value:.6g}")
    if value is None or isinstance(value, bool):  # YAML spelling; by type, since 0 == False
        return f"`{'null' if value is None else str(value).lower()}`"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, dict) and len(str(value)) > 60:
        return f"built-in table of {len(value)} entries"
    return f"`{value}`"


def _limits(field: FieldInfo) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = []
    for meta in field.metadata:
        for name, sign in words.items():
            bound = getattr(meta, name, None)
            if bound is not None:
                found.append(f"{sign} {bound}")
    return ", ".join(found)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _doc(model: type[BaseModel]) -> str:
    text = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0]
    for role in (":class:", ":func:", ":mod:", ":meth:"):
        text = text.replace(role, "")
    return " ".join(text.split())


def _rows(model: type[BaseModel], skip: set[str]) -> list[str]:
    lines = ["| key | type | default | limits | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        lines.append(f"| `{name}` | {_cell(_type_name(field.annotation))} | {_cell(_default(field))} | "
                     f"{_limits(field)} | {_cell(field.description or '')} |")
    return lines


def model_section(title: str, model: type[BaseModel], inherited: type[BaseModel] | None = None) -> list[str]:
    """A Markdown section for one pydantic model: its docstring's first paragraph, then one row per
    field (key, type, default, limits, description), leaving out the fields of ``inherited``."""
    skip = set(inherited.model_fields) if inherited is not None else set()
    return [f"## `{title}`", "", _doc(model), "", *_rows(model, skip), ""]


def kinds_section(title: str, family: str) -> list[str]:
    """A Markdown section for a kind-switched family of :data:`aexp.config.KINDS`: the fields every
    kind with options shares, then a subsection per kind with its own fields."""
    fam = KINDS[family]
    members = list(fam.members.items())
    with_options = [cls for _, cls in members if len(cls.model_fields) > 1]
    shared = set.intersection(*(set(cls.model_fields) for cls in with_options)) if len(with_options) > 1 else {"kind"}
    lines = [f"## `{title}`", "", f"`kind` picks one of {', '.join(f'`{k}`' for k, _ in members)} (default "
             f"`{fam.default}`); each kind takes only its own keys, and a key of another kind is an error naming "
             "both (one at its default is let through, as every config written before the kinds had their own "
             "keys holds them).", ""]
    if shared - {"kind"}:
        first = with_options[0]
        base = next(c for c in first.__mro__ if issubclass(c, BaseModel) and set(c.model_fields) <= shared
                    and c.__doc__ and c is not BaseModel)
        lines += [f"Shared by {', '.join(f'`{k}`' for k, c in members if c in with_options)}: {_doc(base)}", "",
                  *_rows(first, set(first.model_fields) - shared | {"kind"}), ""]
    for kind, cls in members:
        own = set(cls.model_fields) & (shared | {"kind"}) if cls in with_options else {"kind"}
        lines += [f"### `{title}` kind `{kind}`", "", _doc(cls), ""]
        if set(cls.model_fields) - own:
            lines += [*_rows(cls, own), ""]
        else:
            lines += ["No keys of its own." if cls in with_options and shared - {"kind"} else "No keys besides `kind`.", ""]
    return lines


def _targets() -> list[str]:
    lines = ["## `target`", "", "`name` picks a scalariser of `aexp.targets`; its parameters stand beside it "
             "(`{name: band_intensity, window: [2.3, 2.9]}`), in the units of the spectrum axis.", "",
             "| name | parameters (default) | what it computes |", "|---|---|---|"]
    for name in sorted(TARGETS):
        fn = TARGETS[name]
        params = []
        for p in inspect.signature(fn).parameters.values():
            if p.name in ("spectra", "axis"):
                continue
            params.append(f"`{p.name}`" if p.default is inspect.Parameter.empty else f"`{p.name}` ({p.default!r})")
        summary = (inspect.getdoc(fn) or "").split("\n\n")[0]
        lines.append(f"| `{name}` | {', '.join(params) or '-'} | {_cell(summary)} |")
    return lines + [""]


def render() -> str:
    """The whole reference page as Markdown."""
    top = ExperimentConfig.model_fields
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m aexp.config_reference --out docs/configuration.md` from aexp/config.py and",
        "     aexp/targets.py; do not edit by hand (tests/test_docs.py compares). -->",
        "",
        "One YAML file describes one experiment. Unknown keys and wrong types are errors naming the file and",
        "the key; `aexp check CONFIG` also checks what needs the instrument (channels, the patch against the",
        "survey, the target window against the spectrum axis, the budget against the candidates). The budget",
        "is `policy.n_initial + stopping.max_steps`. The shipped configs in `configs/` are commented examples.",
        "",
        "## Top level",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    notes = {"name": "a label, recorded in the manifest", "seed": "seed of every random choice (`aexp run --seed` "
             "overrides it)", "device": "`auto` uses a GPU when torch sees one"}
    for name in ("name", "seed", "device"):
        field = top[name]
        lines.append(f"| `{name}` | {_cell(_type_name(field.annotation))} | {_cell(_default(field))} | {notes[name]} |")
    lines.append("")
    for title, model in SECTIONS:
        lines += kinds_section(title, model) if isinstance(model, str) else model_section(title, model)
        if title == "policy.travel":
            lines += _targets()
    lines += ["`embedder: none` (the string) stands for `{kind: none}`: the surrogate sees the raw patch. "
              "`acquisition: ucb` stands for `{kind: ucb}`, and `beta` beside it on the policy (the form of "
              "configs written before acquisitions had their own section) for `{kind: ucb, beta: ...}`.", ""]
    return "\n".join(lines)


def page_main(render_page: Callable[[], str], prog: str, doc: str, argv: list[str] | None = None) -> int:
    """The command line of a generated reference page: print it, or write it with ``--out``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the page here (default: print it)")
    args = parser.parse_args(argv)
    page = render_page()
    if args.out is None:
        sys.stdout.write(page)
    else:
        args.out.write_text(page)
    return 0


def main(argv: list[str] | None = None) -> int:
    return page_main(render, "python -m aexp.config_reference", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
