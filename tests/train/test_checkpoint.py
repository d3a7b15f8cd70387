"""Checkpoints are written atomically and read as untrusted input (bopkd.train.checkpoint)."""

from __future__ import annotations

import errno
import pickle

import pytest
import torch
from torch import nn

from bopkd.errors import BopkdError, MissingFileError
from bopkd.train import checkpoint as ckpt
from bopkd.train.seed import rng_state


def _state(model: nn.Module, iteration: int = 5) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=10, pct_start=0.05)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    sched.step()
    return {
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": torch.amp.GradScaler("cuda", enabled=False).state_dict(),
        "rng": rng_state(),
        "config": {"optim": {"lr": 1e-3, "betas": [0.9, 0.999]}, "out": None},
        "info": {"params": 8},
    }


def test_round_trip_with_weights_only_loading(tmp_path):
    model = nn.Linear(3, 2)
    state = _state(model)
    path = ckpt.save_checkpoint(tmp_path / "checkpoints" / "last.pt", state)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left
    # Loadable by torch's safe loader as is (only tensors and plain values inside).
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == ckpt.FORMAT and raw["versions"]["torch"] == str(torch.__version__)
    back = ckpt.load_checkpoint(tmp_path)  # a run directory resolves to checkpoints/last.pt
    assert back["iteration"] == 5 and back["config"] == state["config"]
    fresh = nn.Linear(3, 2)
    ckpt.load_model_weights(fresh, back)
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True)
    )
    opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    opt.load_state_dict(back["optimizer"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=10, pct_start=0.05)
    sched.load_state_dict(back["scheduler"])
    assert sched.last_epoch == 1


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, _state(nn.Linear(3, 2), iteration=1))
    bad = _state(nn.Linear(3, 2), iteration=2)
    bad["info"] = {"oops": lambda: 0}  # not picklable: torch.save fails midway
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        ckpt.save_checkpoint(path, bad)
    assert ckpt.load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_full_disk_gives_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """torch's zip writer reports ENOSPC as a RuntimeError whose context is the OSError."""
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, _state(nn.Linear(3, 2), iteration=1))

    def full_disk(obj, f):
        f.write(b"x" * 100)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 80 vs 64"
            ) from None

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(BopkdError) as err:
        ckpt.save_checkpoint(path, _state(nn.Linear(3, 2), iteration=2))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: the checkpoint could not be written")
    assert "no space left on the device" in msg and "--resume" in msg
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_linked_name_keeps_its_content_when_the_source_is_saved_again(tmp_path):
    folder = tmp_path / "checkpoints"
    ckpt.save_checkpoint(folder / "last.pt", _state(nn.Linear(3, 2), iteration=4))
    ckpt.link_checkpoint(folder / "last.pt", folder / "final.pt")
    assert (folder / "final.pt").samefile(folder / "last.pt")
    ckpt.save_checkpoint(folder / "last.pt", _state(nn.Linear(3, 2), iteration=6))
    assert ckpt.load_checkpoint(folder / "final.pt")["iteration"] == 4
    assert ckpt.load_checkpoint(folder / "last.pt")["iteration"] == 6
    ckpt.link_checkpoint(folder / "last.pt", folder / "final.pt")  # replaces the older name atomically
    assert ckpt.load_checkpoint(folder / "final.pt")["iteration"] == 6
    assert sorted(p.name for p in folder.iterdir()) == ["final.pt", "last.pt"]


def test_a_file_system_without_hard_links_gets_a_copy(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    ckpt.save_checkpoint(folder / "last.pt", _state(nn.Linear(3, 2), iteration=4))

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(ckpt.os, "link", no_links)
    ckpt.link_checkpoint(folder / "last.pt", folder / "final.pt")
    assert not (folder / "final.pt").samefile(folder / "last.pt")
    assert ckpt.load_checkpoint(folder / "final.pt")["iteration"] == 4
    assert sorted(p.name for p in folder.iterdir()) == ["final.pt", "last.pt"]


def test_bad_files_give_one_line_errors(tmp_path):
    good = tmp_path / "good.pt"
    ckpt.save_checkpoint(good, _state(nn.Linear(3, 2)))
    data = good.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "garbage.pt": b"this is not a checkpoint at all",
        "empty.pt": b"",
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(
            BopkdError, match=f"{name}: not a readable bopkd checkpoint.*truncated, corrupt"
        ) as e:
            ckpt.load_checkpoint(p)
        assert "\n" not in str(e.value)
    # A torch file that is not ours.
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(BopkdError, match="not a bopkd checkpoint"):
        ckpt.load_checkpoint(tmp_path / "foreign.pt")

    # A pickle that would run code is refused by the safe loader, with our one-line message.
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": ckpt.FORMAT, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(
        BopkdError, match="evil.pt: not a readable bopkd checkpoint \\(WeightsUnpickler error"
    ):
        ckpt.load_checkpoint(tmp_path / "evil.pt")
    # From a newer bopkd, or incomplete.
    torch.save({"format": ckpt.FORMAT, "version": ckpt.CHECKPOINT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(BopkdError, match="newer than this bopkd reads"):
        ckpt.load_checkpoint(tmp_path / "new.pt")
    torch.save({"format": ckpt.FORMAT, "version": 1, "iteration": 3}, tmp_path / "partial.pt")
    with pytest.raises(BopkdError, match="lacks model, config"):
        ckpt.load_checkpoint(tmp_path / "partial.pt")
    (tmp_path / "run").mkdir()
    with pytest.raises(MissingFileError, match="no checkpoint yet"):
        ckpt.load_checkpoint(tmp_path / "run")
    with pytest.raises(MissingFileError):
        ckpt.load_checkpoint(tmp_path / "nope.pt")


def test_weights_of_another_model_are_refused(tmp_path):
    ckpt.save_checkpoint(tmp_path / "a.pt", _state(nn.Linear(3, 2)))
    state = ckpt.load_checkpoint(tmp_path / "a.pt")
    with pytest.raises(BopkdError, match="a.pt: the weights do not fit the model"):
        ckpt.load_model_weights(nn.Linear(4, 2), state, tmp_path / "a.pt")
