"""The survey-rank baseline, the choice of its direction, and the noise stability of a top fraction."""

from __future__ import annotations

import numpy as np
import pytest

from aexp.bench.notes import finish_survey_rank, top_stability
from aexp.policies import SelectionContext, SurveyRankPolicy, survey_values
from aexp.targets import make_target


def _ctx(m: int, excluded=()) -> SelectionContext:
    ex = np.zeros(m, dtype=bool)
    ex[list(excluded)] = True
    import torch

    return SelectionContext(torch.zeros((m, 0)), np.zeros((m, 2)), None, np.array([], dtype=np.int64),
                            np.array([]), ex, 5, 0, np.random.default_rng(0))


def test_survey_values_are_the_patch_centres():
    patches = np.zeros((3, 2, 5, 5), dtype=np.float32)
    patches[:, 0, 2, 2] = [1.0, 5.0, 3.0]
    patches[:, 1, 2, 2] = [3.0, 1.0, 3.0]
    assert survey_values(patches).tolist() == [2.0, 3.0, 3.0]


def test_survey_rank_takes_brightest_or_darkest_first_never_nan():
    values = np.array([0.5, 2.0, np.nan, 2.0, -1.0])
    bright, dark = SurveyRankPolicy(values), SurveyRankPolicy(values, brightest=False)
    assert bright.select(_ctx(5)).index == 1  # tie between 1 and 3: the lower index
    assert bright.select(_ctx(5, excluded=[1])).index == 3
    assert dark.select(_ctx(5)).index == 4
    with pytest.raises(ValueError, match="2 survey values for 5 candidates"):
        SurveyRankPolicy(values[:2]).select(_ctx(5))


def test_the_better_direction_over_the_seeds_is_the_baseline():
    result = {"policies": {"survey-rank-bright": {"discovery": [0.0, 0.5, 0.25], "decision_s": [0.0] * 3},
                           "survey-rank-dark": {"discovery": [0.5, 0.5, 0.0], "decision_s": [0.0] * 3}}}
    finish_survey_rank(result)
    assert result["policies"]["survey-rank"]["direction"] == "dark"
    assert result["policies"]["survey-rank"]["discovery"] == [0.5, 0.5, 0.0]


def test_top_stability_closed_forms():
    axis = np.linspace(0.0, 1.0, 4)
    target = make_target("band_intensity", window=(0.0, 1.0))
    # one spectrum far above the rest: a Poisson redraw never dislodges it
    spectra = np.full((100, 4), 10.0)
    spectra[17] = 10_000.0
    st = top_stability(spectra, axis, target, fraction=0.01, counts=True, n=10)
    assert st["k"] == 1 and st["mean_overlap"] == 1.0 and st["min_overlap"] == 1.0
    # identical means: the top is a lottery, about 1 in 100 of redraws keeps it
    flat = np.full((100, 4), 10.0)
    st = top_stability(flat, axis, target, fraction=0.01, counts=True, n=50)
    assert st["mean_overlap"] < 0.2
    # non-count data: Gaussian at each spectrum's own channel-to-channel noise
    st = top_stability(spectra - 20.0, axis, target, fraction=0.01, counts=False, n=10)
    assert st["method"].startswith("Gaussian") and st["mean_overlap"] == 1.0


def test_bench_seeds_take_ranges():
    import argparse

    from aexp.cli.main import _parse_seeds

    assert _parse_seeds("0-7") == list(range(8)) and _parse_seeds("0-2,10") == [0, 1, 2, 10]
    with pytest.raises(argparse.ArgumentTypeError, match=r"ranges \(0-63 or 0,1,5-9\)"):
        _parse_seeds("0-x")
