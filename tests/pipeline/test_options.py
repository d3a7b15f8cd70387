"""Tests of the options of ``bopkd run-pipeline`` (bopkd/pipeline/options.py)."""

from __future__ import annotations

import pytest

from bopkd.errors import BopkdError
from bopkd.pipeline import parse_sets


@pytest.mark.parametrize(
    "bad, match",
    [
        (["iters=3"], "SCOPE.key=value"),
        (["teacher@x.iters=3"], "SCOPE.key=value"),
        (["synth.a.b=1"], "flat"),
    ],
)
def test_bad_sets_are_one_line_errors(bad, match):
    with pytest.raises(BopkdError, match=match):
        parse_sets(bad)


def test_command_line_lists_are_comma_separated_or_repeated_and_seeds_are_integers():
    from bopkd.pipeline import PipelineOptions

    opts = PipelineOptions.from_command_line(
        methods=["none,ot", "pred"], seeds=["0,1", "2"], force=None, sets=None, dataset="demo"
    )
    assert opts.methods == ["none", "ot", "pred"] and opts.seeds == [0, 1, 2]
    assert opts.students is None and opts.force == [] and opts.sets == [] and opts.dataset == "demo"
    with pytest.raises(BopkdError, match="--seeds '0,x': give integers"):
        PipelineOptions.from_command_line(seeds=["0,x"])
