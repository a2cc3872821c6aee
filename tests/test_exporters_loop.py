"""The architecture registry and the training loop both stages share (resume gives the same tensors)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lida_exporters import data as D  # noqa: E402
from lida_exporters import models as M  # noqa: E402
from lida_exporters import train as T  # noqa: E402

ARCHS = ["lida-resnet-small", "lida-resnet-tiny", "resnet50-lida", "resnet50-lida-nomaxpool"]


def test_registry_lists_builds_and_refuses_unknown_names():
    assert M.list_models() == ARCHS
    enc = M.build("lida-resnet-tiny", "scaled", 8)
    assert enc.backbone.out_dim == 128 and enc.head.out_features == 8
    with pytest.raises(ValueError, match="unknown architecture 'nope'; choose from lida-resnet-small, ") as e:
        M.build("nope")
    assert all(a in str(e.value) for a in ARCHS)
    with pytest.raises(ValueError, match="already registered"):
        M.register_model("lida-resnet-tiny")(lambda: None)


def test_cli_arch_choices_come_from_the_registry(capsys):
    from lida_exporters.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["pretrain", "--arch", "nope"])
    assert e.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["adapt", "--help"])
    assert "--arch {" + ",".join(ARCHS) + "}" in capsys.readouterr().out
    assert all(build_parser().parse_args(["adapt", "--arch", a]).arch == a for a in ARCHS)


def _items() -> list[D.Item]:
    rng = np.random.default_rng(0)
    out = []
    for kind, label, n in [("generated", "g1", 4), ("generated", "g2", 4), ("real", "r1", 4)]:
        for i in range(n):
            px = rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)
            if label == "g1":
                px &= 0xF8
            out.append(D.Item(f"{kind}/{label}/{i}.png", kind, label, "f", "train" if i % 2 else "heldout", px))
    return out


class _Interrupted(Exception):
    pass


def _tensors(path) -> dict:
    """Every tensor of a checkpoint (model, optimiser, heads, prototype, ...) by its key path."""
    out = {}

    def walk(obj, key):
        if isinstance(obj, torch.Tensor):
            out[key] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{key}/{k}")

    walk(T.load_checkpoint(path), "")
    return out


@pytest.mark.parametrize("adapt_loss", ["ce", "center"])
def test_interrupted_stages_resume_to_the_same_tensors(tmp_path, monkeypatch, adapt_loss):
    torch.set_num_threads(1)
    monkeypatch.setattr(T, "CHECKPOINT_EVERY", 2)
    items = _items()
    r = T.Recipe(arch="lida-resnet-tiny", dim=8, crop=32, crop_count=2, pretrain="real", pretrain_steps=5,
                 pretrain_batch=4, adapt_steps=5, adapt_batch=4, adapt_loss=adapt_loss)  # fmt: skip
    whole = tmp_path / "whole"
    want_p = _tensors(T.pretrain(r, items, whole, progress=False))
    want_a = _tensors(T.adapt(r, items, whole / "pretrain.pt", whole, progress=False))

    real_batch = D.CropSampler.batch
    calls = {"n": 0, "stop": 0}

    def interrupting_batch(self, n):
        calls["n"] += 1
        if calls["n"] == calls["stop"]:
            raise _Interrupted
        return real_batch(self, n)

    monkeypatch.setattr(D.CropSampler, "batch", interrupting_batch)
    cut = tmp_path / "cut"
    calls.update(n=0, stop=4)  # pre-training: one batch a step; dies in step 4, last checkpoint at step 2
    with pytest.raises(_Interrupted):
        T.pretrain(r, items, cut, progress=False)
    assert T.load_checkpoint(cut / "pretrain.pt")["step"] == 2
    calls.update(n=0, stop=0)
    got_p = _tensors(T.pretrain(r, items, cut, progress=False))
    calls.update(n=0, stop=8)  # adaptation: 1 batch for the prototype, then 2 a step: dies in step 4
    with pytest.raises(_Interrupted):
        T.adapt(r, items, cut / "pretrain.pt", cut, progress=False)
    assert T.load_checkpoint(cut / "adapt.pt")["step"] == 2
    calls.update(n=0, stop=0)
    got_a = _tensors(T.adapt(r, items, cut / "pretrain.pt", cut, progress=False))

    for want, got in ((want_p, got_p), (want_a, got_a)):
        assert want.keys() == got.keys()
        differ = [k for k in want if not torch.equal(want[k], got[k])]
        assert not differ
    assert T.load_checkpoint(cut / "adapt.pt")["done"] is True


def test_a_max_seconds_stop_is_a_pause_that_the_same_command_continues(tmp_path):
    """``--max-seconds`` keeps the checkpoint *not* done, so a later run (another session's budget)
    continues the schedule to the tensors of one unbroken run."""
    torch.set_num_threads(1)
    items = _items()
    r = T.Recipe(arch="lida-resnet-tiny", dim=8, crop=32, crop_count=2, pretrain="real", pretrain_steps=4,
                 pretrain_batch=4)  # fmt: skip
    want = _tensors(T.pretrain(r, items, tmp_path / "whole", progress=False))
    paused = T.pretrain(r, items, tmp_path / "cut", progress=False, max_seconds=1e-9)  # stops after one step
    st = T.load_checkpoint(paused)
    assert (st["step"], st["done"]) == (1, False)
    got = _tensors(T.pretrain(r, items, tmp_path / "cut", progress=False))
    assert T.load_checkpoint(tmp_path / "cut" / "pretrain.pt")["done"] is True
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
