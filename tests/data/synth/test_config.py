"""Settings of synthetic datasets: range checks, YAML files and ``bopkd synth`` options."""

from __future__ import annotations

import pytest

from bopkd.data.synth import build_synthetic_dataset
from bopkd.data.synth.config import SynthConfig, synth_config_from_options
from bopkd.errors import BopkdError


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"viewpoints": "sideways"}, "viewpoints 'sideways' unknown"),
        ({"objects_per_image": (3, 2)}, "objects_per_image"),
        ({"width": 100}, "--size must be WxH"),
        ({"train": -1}, "--train and --test"),
        ({"name": "a/b"}, "plain folder name"),
    ],
)
def test_config_errors_are_readable(kwargs, match):
    with pytest.raises(BopkdError, match=match):
        SynthConfig(**kwargs)


def test_options_and_yaml(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("train: 7\nviewpoints: free\nobjects_per_image: [2, 3]\n")
    cfg = synth_config_from_options(
        "x", tmp_path, config=y, test=3, size="320x240", objects="1, 4", per_image="2"
    )
    assert (cfg.train, cfg.test, cfg.viewpoints, cfg.width, cfg.height) == (7, 3, "free", 320, 240)
    assert cfg.objects == (1, 4) and cfg.objects_per_image == (2, 2)
    y.write_text("trian: 7\n")
    with pytest.raises(BopkdError, match="unknown setting.*trian"):
        synth_config_from_options("x", tmp_path, config=y)
    with pytest.raises(BopkdError, match="--size '640'"):
        synth_config_from_options("x", tmp_path, size="640")
    with pytest.raises(BopkdError, match="no such procedural object"):
        build_synthetic_dataset(SynthConfig(name="x", root=str(tmp_path), objects=(42,)))
