"""SEClassifier: built from the serialisable config, reloadable from a checkpoint, with the documented metrics."""
from __future__ import annotations

import csv
import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from ablations.config import ExperimentConfig
from ablations.data import build_datamodule
from ablations.training.compiling import CompileNetwork
from ablations.training.cost import ComplexityLog
from ablations.training.metrics import GMACS, PARAMS, RESULT_METRICS, VAL_TOP1_BEST
from ablations.training.module import NonFiniteLossError, SEClassifier, build_scheduler
from senet import model_config
from senet.complexity import complexity


def tiny(**overrides) -> ExperimentConfig:
    cfg = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}))
    return cfg.override({"data.name": "synthetic", "data.image_size": 8, "data.num_samples": 32,
                         "data.batch_size": 16, "wandb.mode": "disabled", **overrides})


def trainer(tmp_path, **kw) -> pl.Trainer:
    kw.setdefault("logger", False)
    return pl.Trainer(accelerator="cpu", devices=1, default_root_dir=tmp_path, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, **kw)


def test_built_from_the_config_dict_and_reloaded_from_a_checkpoint(tmp_path):
    cfg = tiny()
    module = SEClassifier(cfg.to_dict())
    assert module.hparams["config"] == cfg.to_dict()  # plain data only: no nn.Module in the hparams
    dm = build_datamodule(cfg.data, seed=0)
    t = trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    t.fit(module, datamodule=dm)
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    again = SEClassifier.load_from_checkpoint(path)
    x = torch.randn(2, 3, 8, 8)
    module.eval(), again.eval()
    assert torch.equal(module(x), again(x))
    assert again.cfg == cfg
    assert again.val_top1_best.compute() == module.val_top1_best.compute()  # the running best is checkpointed


def test_fit_logs_every_metric_and_the_complexity_once(tmp_path):
    cfg = tiny()
    module = SEClassifier(cfg.to_dict())
    logger = CSVLogger(tmp_path, name="", version="v")
    dm = build_datamodule(cfg.data)
    trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=1).fit(module, datamodule=dm)
    final = {name: float(value) for name, value in module.trainer.callback_metrics.items()}
    assert set(RESULT_METRICS) <= set(final)
    # The logged accuracies are those of the final weights over the whole validation split, counted here by hand.
    module.eval()
    with torch.no_grad():
        logits, labels = zip(*((module(x), y) for x, y in dm.val_dataloader()))
    logits, labels = torch.cat(logits), torch.cat(labels)
    assert len(labels) == len(dm.val_set)
    top5 = logits.topk(5, dim=1).indices
    assert final["val/top1"] == pytest.approx((logits.argmax(1) == labels).float().mean().item(), abs=1e-6)
    assert final["val/top5"] == pytest.approx((top5 == labels[:, None]).any(1).float().mean().item(), abs=1e-6)
    assert final["val/loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    expected = complexity(module.model, input_size=(3, 8, 8))
    with open(tmp_path / "v" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    logged = [r for r in rows if r.get(PARAMS)]
    assert len(logged) == 1  # once, at fit start
    assert int(float(logged[0][PARAMS])) == expected.params == sum(p.numel() for p in module.model.parameters())
    assert float(logged[0][GMACS]) == pytest.approx(expected.gmacs)
    per_epoch = [float(r["val/top1"]) for r in rows if r.get("val/top1")]
    assert len(per_epoch) == 2  # one value per epoch, not per step
    assert per_epoch[-1] == pytest.approx(final["val/top1"]) and final[VAL_TOP1_BEST] == pytest.approx(max(per_epoch))


def test_any_trainer_counts_on_the_eager_network_before_the_compile(tmp_path):
    """The callbacks come from configure_callbacks: Lightning runs the callbacks' setup before the module's, in list
    order, so the count precedes the compile; a ComplexityLog given to the Trainer is replaced (one record, not two)."""
    cfg = tiny(**{"train.compile": "default"})
    module = SEClassifier(cfg.to_dict())
    compiled = []
    module.model.compile = lambda mode: compiled.append((mode, module.complexity))  # records instead of compiling
    t = trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[ComplexityLog()],
                logger=CSVLogger(tmp_path, name="", version="v"))
    t.fit(module, datamodule=build_datamodule(cfg.data))
    expected = complexity(module.model, input_size=(3, 8, 8))
    assert compiled == [("default", expected)]
    assert [type(c) for c in t.callbacks if isinstance(c, (ComplexityLog, CompileNetwork))] == [ComplexityLog,
                                                                                                 CompileNetwork]
    with open(tmp_path / "v" / "metrics.csv") as fh:
        logged = [r for r in csv.DictReader(fh) if r.get(PARAMS)]
    assert len(logged) == 1 and int(float(logged[0][PARAMS])) == expected.params


def test_a_trainer_that_ran_the_module_keeps_its_callbacks_and_prints_no_line(tmp_path, caplog):
    cfg = tiny()
    module, dm = SEClassifier(cfg.to_dict()), build_datamodule(cfg.data)
    t = trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    t.fit(module, datamodule=dm)
    held = [c for c in t.callbacks if isinstance(c, (ComplexityLog, CompileNetwork))]
    t.validate(module, datamodule=dm, verbose=False)
    assert [c for c in t.callbacks if isinstance(c, (ComplexityLog, CompileNetwork))] == held and len(held) == 2
    assert "will override existing callbacks" not in caplog.text


def test_counting_does_not_move_the_random_stream(tmp_path, monkeypatch):
    """A resumed run stays bit-equal to an uninterrupted one only if the count draws nothing from the stream the
    run uses; here the counter draws on purpose, and the fork around it keeps the run's stream where it was."""
    import senet.complexity

    count = senet.complexity.complexity
    monkeypatch.setattr(senet.complexity, "complexity", lambda *a, **kw: (torch.rand(1), count(*a, **kw))[1])
    module = SEClassifier(tiny().to_dict())
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    ComplexityLog().setup(trainer(tmp_path), module, "fit")
    assert module.complexity is not None and torch.equal(torch.rand(4), expected)


def test_a_network_its_data_cannot_feed_is_refused_by_the_module_not_the_counter(tmp_path):
    cfg = tiny(**{"model.in_chans": 1})
    with pytest.raises(ValueError, match="model.in_chans=1 but the 'synthetic' datamodule serves 3-channel images"):
        trainer(tmp_path, max_epochs=1).fit(SEClassifier(cfg.to_dict()), datamodule=build_datamodule(cfg.data))


def test_best_is_the_running_maximum_and_ignores_the_sanity_check(tmp_path):
    cfg = tiny()
    module = SEClassifier(cfg.to_dict())
    seen = []

    class Record(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                seen.append(float(pl_module.val_top1.compute()))

    trainer(tmp_path, max_epochs=3, callbacks=[Record()], num_sanity_val_steps=1).fit(
        module, datamodule=build_datamodule(cfg.data))
    assert float(module.trainer.callback_metrics[VAL_TOP1_BEST]) == pytest.approx(max(seen))


def test_non_finite_loss_raises_a_named_error():
    module = SEClassifier(tiny().to_dict())
    x = torch.full((4, 3, 8, 8), float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        module.training_step((x, torch.zeros(4, dtype=torch.long)), 0)


def test_label_smoothing_and_top5_width():
    module = SEClassifier(tiny(**{"train.label_smoothing": 0.1, "data.num_classes": 3}).to_dict())
    assert module.criterion.label_smoothing == 0.1
    three = SEClassifier(tiny(**{"model.num_classes": 3}).to_dict())
    assert three.val_top5.top_k == 3  # top-5 of a 3-class problem is top-3 (always 1.0), not an error


def test_channels_last_keeps_the_output():
    cfg = tiny()
    plain = SEClassifier(cfg.to_dict())
    cl = SEClassifier(cfg.override({"train.channels_last": True}).to_dict())
    cl.load_state_dict(plain.state_dict())
    assert cl.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8)
    plain.eval(), cl.eval()
    torch.testing.assert_close(cl(x), plain(x), rtol=1e-5, atol=1e-5)


def lrs(t, epochs: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=t.lr)
    sched = build_scheduler(opt, t)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules():
    base = tiny().train
    step = lrs(base.__class__(epochs=6, lr=1.0, schedule="step", step_size=2, gamma=0.1), 6)
    assert step == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    multi = lrs(base.__class__(epochs=6, lr=1.0, schedule="multistep", milestones=(1, 4), gamma=0.5), 6)
    assert multi == pytest.approx([1, 0.5, 0.5, 0.5, 0.25, 0.25])
    cos = lrs(base.__class__(epochs=4, lr=1.0, schedule="cosine"), 4)
    assert cos[0] == 1.0 and cos == sorted(cos, reverse=True) and cos[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 4)))
    warm = lrs(base.__class__(epochs=5, lr=1.0, schedule="constant", warmup_epochs=2), 5)
    assert warm == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])


def test_plateau_monitors_the_validation_loss():
    module = SEClassifier(tiny(**{"train.schedule": "plateau", "train.gamma": 0.5}).to_dict())
    conf = module.configure_optimizers()
    assert conf["lr_scheduler"]["monitor"] == "val/loss"
    assert isinstance(conf["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
