"""End-to-end tests of the Lightning and Hugging Face Trainer adapters (tiny models, CPU).

Each framework's tests are skipped only when that framework is not installed.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
from torch import nn

import sparsetrain

DENSITY = 0.2
METHOD_KW = dict(density=DENSITY, update_every=3, distribution="uniform")


def _expected_active(model: nn.Module) -> dict[str, int]:
    """Active weights per layer that a fresh attach gives (DST keeps these counts)."""
    sp = sparsetrain.attach(copy.deepcopy(model), None, "rigl", total_steps=10, **METHOD_KW)
    return {r["name"]: r["active"] for r in sp.report().rows}


def _check_sparse(model: nn.Module, sparsifier: sparsetrain.Sparsifier, expected: dict[str, int]) -> None:
    assert {r["name"]: r["active"] for r in sparsifier.report().rows} == expected
    assert sparsifier.density() == pytest.approx(DENSITY, abs=0.01)
    params = dict(model.named_parameters())
    for name, mask in sparsifier.masks.items():
        assert torch.all(params[name].detach()[~mask] == 0.0), name
        assert int(torch.count_nonzero(params[name])) <= expected[name]


def _data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 16, generator=g), torch.randint(0, 4, (n,), generator=g)


# ---------------------------------------------------------------------------------------- Lightning
def _lightning():
    return pytest.importorskip("lightning.pytorch")


def _lightning_run(tmp_path, ckpt_path=None, epochs: int = 4):
    pl = _lightning()
    from sparsetrain.integrations.lightning import SparsityCallback

    class Tiny(pl.LightningModule):
        def __init__(self, hidden: int = 48) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 4))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    class Probe(pl.Callback):  # masks and weights as training (re)starts, after any restore
        def on_train_start(self, trainer, pl_module):
            self.masks = {n: m.clone() for n, m in sparse.sparsifier.masks.items()}
            self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}

    pl.seed_everything(1 if ckpt_path else 0, verbose=False)
    model = Tiny()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_data()), batch_size=8)
    sparse, probe = SparsityCallback("rigl", seed=3, **METHOD_KW), Probe()
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1,
                                               every_n_epochs=1)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[sparse, probe, checkpoints],
                         logger=pl.loggers.CSVLogger(tmp_path, name="logs"), enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, log_every_n_steps=1)
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return trainer, model, sparse, probe


def test_lightning_fit_checkpoint_and_resume(tmp_path):
    trainer, model, sparse, _ = _lightning_run(tmp_path / "full")
    expected = _expected_active(model)
    sp = sparse.sparsifier
    assert sp.step_count == 32 and len(sp.history) > 1  # 4 epochs x 8 batches, topology updates ran
    assert sp.optimizer._sparsetrain_attached is False  # detached at the end of fit
    _check_sparse(model, sp, expected)
    logged = trainer.logged_metrics
    assert float(logged["sparsity/density"]) == pytest.approx(sp.density())
    assert float(logged["sparsity/layer/net.0.weight"]) == pytest.approx(expected["net.0.weight"] / (48 * 16))
    csv = (tmp_path / "full" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "sparsity/density" in csv.splitlines()[0]

    ckpt = torch.load(tmp_path / "full" / "ckpt" / "epoch=1.ckpt", map_location="cpu", weights_only=False)
    state = ckpt["callbacks"][sparse.state_key]
    assert state["step"] == 16 and set(state["masks"]) == {"net.0.weight", "net.2.weight"}

    trainer2, model2, sparse2, probe = _lightning_run(tmp_path / "resumed",
                                                      ckpt_path=tmp_path / "full" / "ckpt" / "epoch=1.ckpt")
    for name, mask in state["masks"].items():  # restored, not redrawn, and the weights survived the attach
        assert torch.equal(probe.masks[name], mask)
        assert torch.equal(probe.weights[name], ckpt["state_dict"][name])
    assert sparse2.sparsifier.step_count == 32
    _check_sparse(model2, sparse2.sparsifier, expected)
    for name, mask in sp.masks.items():  # same data order and state: same end as the uninterrupted run
        assert torch.equal(sparse2.sparsifier.masks[name], mask)


def test_lightning_cli_config(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["sparsetrain-test"])
    pl = _lightning()
    pytest.importorskip("jsonargparse")
    from lightning.pytorch.cli import LightningCLI

    from sparsetrain.integrations.lightning import SparsityCallback

    class Plain(pl.LightningModule):
        def __init__(self, hidden: int = 8) -> None:
            super().__init__()
            self.layer = nn.Linear(4, hidden)

    callback = {"class_path": "sparsetrain.integrations.lightning.SparsityCallback",
                "init_args": {"method": "set", "seed": 5, "exclude": ["head.*"], "log_layers": False,
                              "method_args": {"density": 0.3, "update_every": 7}}}
    cli = LightningCLI(Plain, run=False, save_config_callback=None,
                       args={"trainer": {"callbacks": [callback], "logger": False, "default_root_dir": str(tmp_path)}})
    found = [c for c in cli.trainer.callbacks if isinstance(c, SparsityCallback)]
    assert len(found) == 1
    cb = found[0]
    assert (cb.method, cb.seed, cb.exclude, cb.log_layers) == ("set", 5, ["head.*"], False)
    assert cb.method_kwargs == {"density": 0.3, "update_every": 7}


# ---------------------------------------------------------------------------------------- transformers
def _hf_run(out, resume=None, steps: int = 24):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from sparsetrain.integrations.transformers import STATE_FILE, SparsityCallback

    class Cfg(transformers.PretrainedConfig):
        model_type = "sparsetrain-tiny"

        def __init__(self, hidden: int = 48, **kw) -> None:
            super().__init__(**kw)
            self.hidden = hidden

    class Tiny(transformers.PreTrainedModel):
        config_class = Cfg

        def __init__(self, config: Cfg) -> None:
            super().__init__(config)
            self.fc1, self.fc2 = nn.Linear(16, config.hidden), nn.Linear(config.hidden, 4)
            self.post_init()

        def forward(self, x, labels=None):
            logits = self.fc2(torch.relu(self.fc1(x)))
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    class Data(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.x, self.y = _data()

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i):
            return {"x": self.x[i], "labels": self.y[i]}

    class Probe(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.masks = {n: m.clone() for n, m in sparse.sparsifier.masks.items()}
            self.weights = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(1 if resume else 0)
    model = Tiny(Cfg())
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=0.05,
        save_steps=8, logging_steps=4, report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
        seed=0)
    sparse, probe = SparsityCallback("rigl", seed=3, **METHOD_KW), Probe()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Data(), callbacks=[sparse, probe])
    trainer.train(resume_from_checkpoint=resume)
    return trainer, model, sparse, probe, STATE_FILE


def test_transformers_train_save_and_resume(tmp_path):
    trainer, model, sparse, _, state_file = _hf_run(tmp_path)
    expected = _expected_active(model)
    sp = sparse.sparsifier
    assert sp.step_count == 24 and len(sp.history) > 1
    _check_sparse(model, sp, expected)
    logged = [h["sparsity/density"] for h in trainer.state.log_history if "sparsity/density" in h]
    assert len(logged) >= 6 and logged[-1] == pytest.approx(sp.density())
    for step in (8, 16, 24):
        assert os.path.isfile(tmp_path / f"checkpoint-{step}" / state_file)
    assert not [f for f in os.listdir(tmp_path / "checkpoint-16") if ".tmp" in f]
    saved = torch.load(tmp_path / "checkpoint-16" / state_file, weights_only=True)
    assert saved["step"] == 16
    final = {n: m.clone() for n, m in sp.masks.items()}
    final_weights = {k: v.clone() for k, v in model.state_dict().items()}
    from safetensors.torch import load_file

    at_16 = load_file(tmp_path / "checkpoint-16" / "model.safetensors")

    # resume from the middle one, although checkpoint-24 is the latest in output_dir
    _, model2, sparse2, probe, _ = _hf_run(tmp_path, resume=str(tmp_path / "checkpoint-16"))
    assert sparse2.loaded_from == str(tmp_path / "checkpoint-16" / state_file)
    for name, mask in saved["masks"].items():
        assert torch.equal(probe.masks[name], mask)
        assert torch.equal(probe.weights[name], at_16[name])  # the loaded weights survived the attach
    assert sparse2.sparsifier.step_count == 24
    _check_sparse(model2, sparse2.sparsifier, expected)
    for name, mask in final.items():
        assert torch.equal(sparse2.sparsifier.masks[name], mask)
    for name, value in final_weights.items():
        assert torch.allclose(model2.state_dict()[name], value, rtol=0, atol=1e-6), name


def test_transformers_resume_without_state_is_an_error(tmp_path):
    pytest.importorskip("transformers")
    from sparsetrain.errors import SparsetrainError
    from sparsetrain.integrations.transformers import find_state_file

    class Args:
        output_dir, resume_from_checkpoint = str(tmp_path), None

    (tmp_path / "checkpoint-5").mkdir()
    with pytest.raises(SparsetrainError, match="no sparsetrain_state.pt"):
        find_state_file(Args(), 5)


def test_transformers_trainer_trains_gpt2_with_sparse_conv1d(tmp_path):
    """Real Trainer steps on a GPT-2 built from a config: every Conv1D weight sparse at the end, RigL moved
    them, the tied embedding / head dense, and the masks saved with the checkpoint (issue 13)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers.pytorch_utils import Conv1D

    from sparsetrain.integrations.transformers import STATE_FILE, SparsityCallback

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=100,
                                                                 n_positions=32))
    ids = torch.randint(0, 100, (64, 16), generator=torch.Generator().manual_seed(0))

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i], "labels": ids[i]}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=8, learning_rate=1e-3,
        save_steps=12, logging_steps=4, report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
        seed=0)
    sparse = SparsityCallback("rigl", density=0.1, update_every=4, seed=1)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Data(), callbacks=[sparse])
    first = {}

    class Probe(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            first.update({n: m.clone() for n, m in sparse.sparsifier.masks.items()})

    trainer.add_callback(Probe())
    trainer.train()
    sp = sparse.sparsifier
    conv1d = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, Conv1D)}
    assert set(sp.masks) == set(conv1d) and sp.step_count == 12
    for name, module in conv1d.items():
        assert not module.weight[~sp.masks[name]].any(), name  # exact zeros off the mask
        assert int(torch.count_nonzero(module.weight)) > 0.9 * int(sp.masks[name].sum()), name  # and trained on it
    assert sp.density() == pytest.approx(0.1, abs=1e-4)
    assert any(not torch.equal(first[n], m) for n, m in sp.masks.items())  # RigL updates ran
    assert int(torch.count_nonzero(model.transformer.wte.weight)) == model.transformer.wte.weight.numel()
    saved = torch.load(tmp_path / "checkpoint-12" / STATE_FILE, weights_only=True)
    assert set(saved["masks"]) == set(conv1d)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
