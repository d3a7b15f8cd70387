"""The dense family's distillation methods: registry entries beside the sparse ones, every method on the
outputs of two tiny dense networks, dense FKD's levels, and a few training steps through the trainer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bopkd.errors import BopkdError
from bopkd.losses.kd import DENSE_KD_METHODS, KD_METHODS, KD_REGISTRY, build_kd, kd_names, make_spec
from bopkd.losses.kd.dense_fkd import DenseFKD, DenseFKDConfig, dense_feature_strides, encoder_channels
from bopkd.losses.kd.registry import build_kd_loss, get_entry, register_kd, spec_from_dict, unregister_kd
from bopkd.models.dense import DenseModelConfig, build_dense_model

NAMES = ["none", "pred", "fkd", "ot", "fkd+ot"]


def test_sparse_and_dense_entries_of_one_name_coexist():
    assert kd_names() == NAMES and kd_names("dense") == NAMES
    for name in NAMES:
        s, d = get_entry(name), get_entry(name, family="dense")
        assert (s.family, d.family) == ("sparse", "dense")
        assert s.method_cls is not d.method_cls and s.weight_key == d.weight_key
        assert KD_REGISTRY[("dense", name)] is d is DENSE_KD_METHODS[name] and KD_METHODS[name] is s
    assert len(KD_REGISTRY) == 10 and list(KD_REGISTRY)[:5] == [("sparse", n) for n in NAMES]
    assert [e.default_weight() for e in DENSE_KD_METHODS.values()] == [None, 1.0, 1.0, 5.0, 5.0]
    # options are checked by the family's config: ``pool`` is a dense ot option only
    assert make_spec("ot", {"pool": 2}, family="dense").config.pool == 2
    with pytest.raises(BopkdError, match="pool"):
        make_spec("ot", {"pool": 2})
    assert (
        spec_from_dict({"method": "fkd+ot", "options": {"ot": {"pool": 8}}}, family="dense").config.ot.pool
        == 8
    )
    assert make_spec("pred", weight=3.0, family="dense").config.weight == 3.0


def test_unknown_family_and_duplicates_are_one_line_errors():
    for call in (
        lambda: get_entry("ot", family="zebra"),
        lambda: kd_names("zebra"),
        lambda: make_spec("ot", family="x"),
    ):
        with pytest.raises(BopkdError, match="unknown pose family") as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(BopkdError, match="unknown pose family"):
        register_kd("toy", family="zebra", config=DenseFKDConfig, summary="x")
    with pytest.raises(BopkdError, match="dense distillation method 'ot' is registered twice"):
        register_kd("ot", family="dense", config=DenseFKDConfig, summary="x")(type("Again", (), {}))
    with pytest.raises(BopkdError, match="unknown dense distillation method 'toy'"):
        get_entry("toy", family="dense")
    with pytest.raises(BopkdError, match="of the sparse family, not dense"):
        build_kd(make_spec("none"), family="dense")


def test_a_dense_method_registered_and_removed_leaves_the_sparse_one():
    @register_kd("toy", family="dense", config=DenseFKDConfig, summary="x", terms=("kd_toy",))
    class Toy(DenseFKD):
        pass

    try:
        assert "toy" in kd_names("dense") and "toy" not in KD_METHODS
        assert Toy.family == "dense" and Toy.name == "toy"
    finally:
        unregister_kd("toy", family="dense")
    assert kd_names("dense") == NAMES and kd_names() == NAMES


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    student = build_dense_model(
        DenseModelConfig(encoder="tiny-cpu", out_size=16, bits=4, decoder_channels=[8] * 4)
    )
    teacher = build_dense_model(
        DenseModelConfig(encoder="resnet18", out_size=16, bits=4, decoder_channels=[8] * 4)
    )
    return student, teacher.eval().requires_grad_(False)


def test_every_dense_method_builds_runs_and_backpropagates(nets):
    student, teacher = nets
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t_out = teacher(images)
    for name in NAMES:
        method = build_kd(name, student=student, teacher=teacher, family="dense")
        assert method.name == name and method.family == "dense"
        s_out = student(images)
        terms = method(s_out, {}, None if name == "none" else t_out)
        assert set(terms) == set(DENSE_KD_METHODS[name].terms)
        assert all(torch.isfinite(v) and v.dim() == 0 and float(v.detach()) > 0 for v in terms.values()), (
            terms
        )
        if name == "none":
            continue
        student.zero_grad()
        sum(terms.values()).backward()
        # output terms reach the head; feature terms (fkd) the encoder
        where = student.encoder if name == "fkd" else student.head
        grads = [p.grad for p in where.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, name
        trainable = [p for p in method.parameters() if p.requires_grad]
        assert ("fkd" in name) == bool(trainable)


def test_dense_fkd_matches_strides_and_sizes_adapters_from_the_encoders(nets):
    student, teacher = nets
    sc, tc = encoder_channels(student), encoder_channels(teacher)
    assert sc == {2: 8, 4: 16, 8: 32, 16: 64} and tc == {2: 64, 4: 64, 8: 128, 16: 256, 32: 512}
    m = DenseFKD.build(DenseFKDConfig(), student=student, teacher=teacher)
    assert m.strides == [2, 4, 8, 16]
    assert [tuple(m.adapters[str(s)].weight.shape[:2]) for s in m.strides] == [
        (tc[s], sc[s]) for s in m.strides
    ]
    images = torch.rand(1, 3, 32, 32)
    s_out, t_out = student(images), teacher(images)
    assert dense_feature_strides(s_out) == [2, 4, 8, 16] and dense_feature_strides(t_out) == [2, 4, 8, 16, 32]
    # the terms are the sum of the sparse FKD's per-level terms over the shared strides, times the weights
    s_by = dict(zip(dense_feature_strides(s_out), s_out["features"], strict=True))
    t_by = dict(zip(dense_feature_strides(t_out), t_out["features"], strict=True))
    parts = [[x.detach() for x in m.level_terms(s, s_by[s], t_by[s])] for s in m.strides]
    got = {k: v.detach() for k, v in m(s_out, {}, t_out).items()}
    cfg = m.cfg
    assert float(got["kd_fkd_feat"]) == pytest.approx(
        cfg.feat_weight * float(sum(p[0] for p in parts)), rel=1e-5
    )
    assert float(got["kd_fkd_att"]) == pytest.approx(
        cfg.att_weight * float(sum(p[1] for p in parts)), rel=1e-5
    )
    only = DenseFKD.build(DenseFKDConfig(strides=[8, 16]), student=student, teacher=teacher)
    assert only.strides == [8, 16] and sorted(only.adapters) == ["16", "8"]
    with pytest.raises(BopkdError, match="use a dense network"):
        encoder_channels(torch.nn.Linear(1, 1))


def test_build_kd_loss_reads_the_run_s_family(nets):
    student, teacher = nets

    @dataclasses.dataclass
    class KD:
        method: str = "ot"
        options: dict = dataclasses.field(default_factory=lambda: {"pool": 8})

    @dataclasses.dataclass
    class Cfg:
        kd: KD = dataclasses.field(default_factory=KD)
        family: str = "dense"

    m = build_kd_loss(Cfg(), student, teacher)
    assert m.family == "dense" and m.cfg.pool == 8
    with pytest.raises(BopkdError, match="pool"):
        build_kd_loss(Cfg(family="sparse"), student, teacher)


DENSE = (
    "family=dense",
    "dense.out_size=32",
    "dense.bits=8",
    "dense.min_vertices=4096",
    "dense.decoder_channels=[16,16,16,16]",
)


@pytest.mark.parametrize("method", ["pred", "fkd", "ot", "fkd+ot"])
def test_a_dense_student_trains_a_few_steps_with_each_method(make_cfg, tmp_path_factory, method):
    from bopkd.train.config import RunConfig

    if "family" not in {f.name for f in dataclasses.fields(RunConfig)}:
        pytest.skip("the run config has no family yet")
    from bopkd.train import checkpoint as ckpt
    from bopkd.train.command import train
    from bopkd.train.logging import read_metrics

    base = tmp_path_factory.getbasetemp() / "dense_kd_teacher"
    if not base.is_dir():
        train(make_cfg(base, *DENSE, iters=2))
    out = tmp_path_factory.mktemp("dense_kd") / method.replace("+", "_")
    sets = (*DENSE, "role=student", f"kd.method={method}", f"kd.teacher={base}")
    last = train(make_cfg(out, *sets, iters=2))["last"]
    terms = DENSE_KD_METHODS[method].terms
    assert set(terms) | {"loss_mask", "loss_code"} <= set(last)
    assert all(last[k] > 0 and last[k] < float("inf") for k in terms), last
    assert [r["iter"] for r in read_metrics(out)] == [1, 2]
    state = ckpt.load_checkpoint(out)
    assert state["config"]["family"] == "dense" and state["config"]["kd"]["method"] == method
    if "fkd" in method:
        assert any(".adapters." in f".{k}" for k in state["extra_modules"]["kd"])
