"""The acceleration module's fallbacks: when a private torch name it uses is missing, the fused step says
it is unsupported, the loop runs the eager step (same losses as compile="off"), the ISA probe does
nothing and the compiler keeps its default options."""

import sys

import numpy as np
import pytest
import torch
import torch._dynamo
import torch._inductor.config
import torch._inductor.cpu_vec_isa

import flowforge as nf
from flowforge import training
from flowforge.training import accelerate


def test_every_private_name_is_found_on_the_tested_torch():
    for key in accelerate.PRIVATE_NAMES:
        assert accelerate.private(key) is not None, key
    assert accelerate.fusable_here()


def _fit(compile, steps=30):
    torch.manual_seed(0)
    model = nf.presets.PlanarFlow(2, 2, p=nf.distributions.TwoModes())
    result = training.fit(model, steps, anneal_iters=20, seed=3, compile=compile, progress=False, device="cpu")
    return model, result


def _runs_eagerly_with_the_losses_of_compile_off(monkeypatch):
    """With ``torch.compile`` a no-op, a compiled-loss eager step computes exactly what ``"off"`` does."""
    off_model, off = _fit("off")
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    monkeypatch.setattr(accelerate, "AUTO_COMPILE_PAYOFF_SECONDS", 0.0)
    for mode in ("on", "auto"):
        model, result = _fit(mode)
        assert result.compiled and not result.fused
        np.testing.assert_array_equal(result.loss_history, off.loss_history)
        for a, b in zip(model.parameters(), off_model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def _forget_the_probe(monkeypatch):
    monkeypatch.setattr(accelerate, "_isa_probe", None)


@pytest.mark.parametrize(
    "remove",
    [
        # torch's own Adam calls torch.optim.adam.adam, so a torch without it is one that renamed it:
        lambda mp: mp.setitem(accelerate.PRIVATE_NAMES, "adam", ("torch.optim.adam", "renamed_adam")),
        lambda mp: mp.setitem(sys.modules, "torch.optim.adam", None),
        lambda mp: mp.delattr(torch._dynamo.config, "recompile_limit"),
    ],
    ids=["adam-function", "adam-module", "recompile-limit"],
)
def test_without_a_fused_steps_private_name_the_loop_steps_eagerly(monkeypatch, remove):
    remove(monkeypatch)
    assert not accelerate.fusable_here()
    assert not accelerate.FusedAdamStep.supports(nf.presets.PlanarFlow(2, 2))
    with pytest.raises(RuntimeError, match="lacks"):
        accelerate.FusedAdamStep(nf.presets.PlanarFlow(2, 2), lambda model, value: value, 1e-3, 0.0)
    _runs_eagerly_with_the_losses_of_compile_off(monkeypatch)


@pytest.mark.parametrize(
    "remove",
    [
        lambda mp: mp.delattr(torch._inductor.cpu_vec_isa, "pick_vec_isa"),
        lambda mp: mp.setitem(sys.modules, "torch._inductor.cpu_vec_isa", None),
    ],
    ids=["function", "module"],
)
def test_without_the_isa_check_the_probe_does_nothing(monkeypatch, remove):
    _forget_the_probe(monkeypatch)
    remove(monkeypatch)
    assert accelerate.probe_cpu_vector_isa(torch.device("cpu")) is None
    assert accelerate._isa_probe is None
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    _, result = _fit("on", steps=5)
    assert result.fused and np.isfinite(result.loss_history).all()
    assert accelerate._isa_probe is None


def test_the_probe_starts_nothing_off_the_cpu(monkeypatch):
    _forget_the_probe(monkeypatch)
    assert accelerate.probe_cpu_vector_isa(torch.device("meta")) is None and accelerate._isa_probe is None


def test_without_the_header_option_tiny_steps_keep_the_default_options(monkeypatch):
    planar = nf.presets.PlanarFlow(2, 16, p=nf.distributions.TwoModes())
    assert accelerate.inductor_options(planar, 40, torch.device("cpu")) == {"cpp_cache_precompile_headers": False}
    monkeypatch.delattr(torch._inductor.config, "cpp_cache_precompile_headers")
    assert accelerate.inductor_options(planar, 40, torch.device("cpu")) is None


def test_auto_policy_compiles_when_the_rest_of_the_run_is_long_enough(monkeypatch):
    probe_steps = accelerate.AUTO_PROBE_STEPS - accelerate.AUTO_PROBE_WARMUP
    monkeypatch.setattr(accelerate, "AUTO_COMPILE_PAYOFF_SECONDS", 10.0)
    assert accelerate.compile_pays(probe_steps * 0.5, 21)  # 10.5 s left at 0.5 s a step
    assert not accelerate.compile_pays(probe_steps * 0.5, 20)  # 10 s left
