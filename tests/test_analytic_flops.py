"""count_flops (FlopCounterMode) equals the closed-form analytic count for every model that
registers a formula (``formula_names()``; a new one is tested with no edit here)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils import flop_counter

from edge_sdk import models
from edge_sdk.errors import InvalidInputError
from edge_sdk.models.analytic import analytic_flops, analytic_terms, formula_names
from edge_sdk.profiler import count_flops

torch.set_num_threads(1)

BATCH = 2


@contextlib.contextmanager
def _plain(model):
    model.train()
    yield


@contextlib.contextmanager
def _no_grad_eval(model):
    model.eval()
    with torch.no_grad():
        yield


MODES = {"train": _plain, "no_grad_eval": _no_grad_eval}


def check_count_flops_equals_analytic(name, width, mode, backward):
    torch.manual_seed(0)
    model = models.create(name, width=width)
    x = torch.randn(BATCH, *model.config.input_shape)
    with MODES[mode](model):
        measured = count_flops(model, x, backward=backward)
    assert measured == analytic_flops(model, BATCH, backward=backward)
    assert measured > 0


def check_flop_counter_equals_analytic(name, width):
    """torch's FlopCounterMode itself (not our count_flops) agrees with the formula."""
    torch.manual_seed(0)
    model = models.create(name, width=width)
    x = torch.randn(BATCH, *model.config.input_shape)
    for backward in (False, True):
        total, _ = _torch_flop_counter_total(model, x, backward)
        assert total == analytic_flops(model, BATCH, backward=backward)


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "train_step"])
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("width", [1.0, 0.5])
@pytest.mark.parametrize("name", formula_names())
def test_count_flops_equals_analytic(name, width, mode, backward):
    check_count_flops_equals_analytic(name, width, mode, backward)


@pytest.mark.parametrize("name", formula_names())
def test_flop_counter_equals_analytic(name):
    check_flop_counter_equals_analytic(name, 0.25)


def test_built_in_models_have_formulas():
    assert set(formula_names()) >= {"cnn1d", "mixer_tiny", "resnet18", "resnet8", "vit_tiny"}


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("vit_tiny", {"depth": 2, "norm": "batchnorm", "act": "relu", "heads": 4, "width": 0.3}),
        ("vit_tiny", {"depth": 1, "img_size": 16, "patch_size": 2, "in_channels": 1}),
        ("resnet8", {"in_channels": 1, "depth": 2, "norm": "none", "num_classes": 3}),
        ("resnet18", {"width": 0.1, "img_size": 20, "norm": "group"}),
        ("cnn1d", {"depth": 5, "kernel_size": 3, "length": 37, "width": 0.7}),
        ("mixer_tiny", {"depth": 1, "img_size": 24, "patch_size": 3, "width": 0.33}),
    ],
)
def test_count_flops_equals_analytic_with_options(name, kwargs):
    model = models.create(name, **kwargs)
    x = torch.randn(3, *model.config.input_shape)
    for backward in (False, True):
        assert count_flops(model, x, backward=backward) == analytic_flops(model, 3, backward=backward)


def _torch_flop_counter_total(model, x, backward):
    """FlopCounterMode directly, with torch's own SDPA formulas mapped onto the CPU kernel."""
    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, **kw: (
            flop_counter.sdpa_flop_count(q, k, v)
        ),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda g, q, k, v, *a, **kw: (
            flop_counter.sdpa_backward_flop_count(g, q, k, v)
        ),
    }
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        out = model(x)
        if backward:
            torch.nn.functional.cross_entropy(out, torch.zeros(len(x), dtype=torch.long)).backward()
    return counter.get_total_flops(), counter.get_flop_counts()["Global"]


def test_attention_is_counted_by_torch_as_in_the_formula():
    model = models.create("vit_tiny", width=0.25, depth=2)
    x = torch.randn(BATCH, *model.config.input_shape)
    total, per_op = _torch_flop_counter_total(model, x, backward=True)
    assert total == analytic_flops(model, BATCH, backward=True)
    heads, head_dim, tokens = 3, 16, 65
    base = BATCH * heads * tokens * tokens * head_dim
    fwd_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    bwd_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    assert per_op[fwd_op] == 2 * 4 * base  # two blocks
    assert per_op[bwd_op] == 2 * 10 * base
    attn = [t for t in analytic_terms(model, BATCH) if t.name.endswith("sdpa")]
    assert sum(t.forward for t in attn) == per_op[fwd_op]
    assert sum(t.backward for t in attn) == per_op[bwd_op]


def test_first_layer_has_no_grad_input():
    terms = analytic_terms(models.create("resnet8"), 1)
    assert terms[0].name == "conv1" and terms[0].backward == terms[0].forward
    assert all(t.backward == 2 * t.forward for t in terms[1:])


def test_known_values():
    # CIFAR ResNet-18: 0.556 GMAC per image -> 2 * 555,422,720 FLOPs forward
    assert analytic_flops(models.create("resnet18"), 1) == 1_110_845_440
    assert analytic_flops(models.create("resnet18"), 4) == 4 * 1_110_845_440


def test_accepts_config_and_rejects_bad_input():
    m = models.create("mixer_tiny", width=0.5)
    assert analytic_flops(m.config, 2) == analytic_flops(m, 2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="batch_size"):
            analytic_flops(m, bad)
    with pytest.raises(InvalidInputError, match="config"):
        analytic_flops(torch.nn.Linear(3, 4), 1)
    v = models.create("vit_tiny", width=0.25)
    v.blocks = torch.nn.Sequential(*list(v.blocks)[:2])
    with pytest.raises(InvalidInputError, match="blocks"):
        analytic_flops(v, 1)
