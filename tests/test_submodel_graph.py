"""The channel-coupling analysis: Torch-Pruning as an oracle, and the extensible rule registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sdk import models
from edge_sdk.errors import InvalidInputError
from edge_sdk.submodel import plan
from edge_sdk.submodel.graph import analyse, register_module_rule
from edge_sdk.submodel.graph import rules as rule_registry
from edge_sdk.submodel.structured import analysis_for
from submodel_helpers import check_equivalent

# ---- Torch-Pruning as an oracle --------------------------------------------------------------

CNNS = [
    ("cnn1d", {}),
    ("cnn1d", {"norm": "none"}),
    ("resnet8", {}),
    ("resnet8", {"norm": "group"}),
    ("resnet18", {"width": 0.25}),
]


def _our_groups(model: nn.Module, x: torch.Tensor) -> dict[frozenset, int]:
    """Each prunable channel group (leaf) as the set of (state-dict name, dim) it slices -> units."""
    an = analysis_for(model, x)
    out = {}
    for i, size in enumerate(an.leaf_sizes):
        pairs = frozenset((name, d) for name, dims in an.param_dims.items()
                          for d, ld in enumerate(dims) if any(j == i for j, _ in ld))
        out[pairs] = size
    return out


def _tp_groups(model: nn.Module, x: torch.Tensor) -> dict[frozenset, int]:
    """Torch-Pruning's coupled groups in the same terms -> channels of the group.

    A group is a list of (dependency, indices); a dependency's target is a layer (or one of
    Torch-Pruning's internal op nodes: add, relu, reshape... which hold no tensors) and its
    handler says whether the layer's output or input channels are pruned.
    """
    tp = pytest.importorskip("torch_pruning")
    names = {mod: n for n, mod in model.named_modules()}
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    out = {}
    # the classifier's outputs are the model's outputs: fixed in ours, so not a group here either
    for group in dg.get_all_groups(ignored_layers=[model.fc], root_module_types=[nn.Conv1d, nn.Conv2d, nn.Linear]):
        pairs = set()
        for item in group:
            mod, prefix = item.dep.target.module, names.get(item.dep.target.module)
            outputs = item.dep.handler.__name__ == "prune_out_channels"
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                pairs.add((f"{prefix}.weight", 0 if outputs else 1))
                if outputs and mod.bias is not None:
                    pairs.add((f"{prefix}.bias", 0))
            elif isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                # affine parameters and running statistics; num_batches_tracked is a scalar
                tensors = list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
                pairs |= {(f"{prefix}.{n}", 0) for n, t in tensors if t.dim() == 1}
            else:
                assert prefix is None, f"layer {prefix} ({type(mod).__name__}) not mapped by the test"
        out[frozenset(pairs)] = len(group[0].idxs)
    return out


@pytest.mark.parametrize("name,kw", CNNS, ids=[f"{n}-{k}" for n, k in CNNS])
def test_channel_groups_equal_torch_pruning(name, kw):
    torch.manual_seed(0)
    m = models.create(name, **kw).eval()
    x = torch.randn(2, *models.spec(name).input_shape)
    ours, theirs = _our_groups(m, x), _tp_groups(m, x)
    # one to one: every channel group of ours is exactly one Torch-Pruning group (same tensors,
    # same dims), and Torch-Pruning has no group we lack
    assert set(ours) == set(theirs), (set(ours) ^ set(theirs))
    for pairs, units in ours.items():
        norms = [mod for n, mod in m.named_modules() if isinstance(mod, nn.GroupNorm) and (f"{n}.weight", 0) in pairs]
        # Torch-Pruning prunes single channels; under GroupNorm our unit is a whole norm group
        # (pruning a channel would change the statistics of the channels left in its group)
        per_unit = norms[0].num_channels // norms[0].num_groups if norms else 1
        assert theirs[pairs] == units * per_unit


# ---- the rule registry ---------------------------------------------------------------------------

class ScaledLinear(nn.Module):
    """``x W^T * exp(s) + b``: traced through, ``F.linear`` sees a computed weight, which the
    built-in rules cannot follow, so its channels are kept whole until it has a rule."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in ** 0.5)
        self.bias = nn.Parameter(torch.randn(n_out) * 0.1)
        self.log_scale = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.log_scale.exp(), self.bias)


class UnruledScaledLinear(ScaledLinear):
    """Same layer with a forward of its own: the rule of ScaledLinear does not cover it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.log_scale.exp(), self.bias)


def _net(layer: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), layer(32, 24), nn.GELU(), nn.Linear(24, 3))


def test_custom_layer_without_rule_keeps_its_channels_whole():
    m = _net(ScaledLinear)
    an = analyse(m, torch.randn(4, 6))
    assert any("computed weight" in f for f in an.fallbacks)
    assert all(i < 0 for ld in an.param_dims["2.weight"] for i, _ in ld)


@pytest.fixture
def scaled_linear_rule():
    @register_module_rule(ScaledLinear)
    def rule(an, node, mod, args, kwargs, result):
        x = an.tensor_desc(args[0])
        w = an.param(f"{node.target}.weight")
        an.union_f(x[-1], w[1])  # input features = weight columns
        an.union_f(w[0], an.param(f"{node.target}.bias")[0])
        an.mark_producer(w[0])  # its outputs are channels it produces: prunable
        an.add_weight(f"{node.target}.weight")
        return [list(f) for f in x[:-1]] + [list(w[0])]

    yield rule
    del rule_registry._MODULE_RULES[ScaledLinear]


@pytest.mark.parametrize("strategy", ["fiarse-structured", "heterofl", "fedrolex"])
def test_register_module_rule_makes_a_custom_layer_prunable(scaled_linear_rule, strategy):
    m = _net(ScaledLinear)
    x = torch.randn(4, 6)
    p, sub = check_equivalent(m, x, 0.3, strategy)
    rows, cols = p.index_map["2.weight"]
    assert rows is not None and cols is not None  # both sides of the custom layer are sliced
    assert p.index_map["2.log_scale"] == []  # its scalar is held whole, and part of the plan
    layer = sub.get_submodule("2")
    assert layer.weight.shape == (len(rows), len(cols)) and type(layer) is ScaledLinear
    assert p.to_bytes()  # and the plan serialises


def test_rule_does_not_cover_a_subclass_with_its_own_forward(scaled_linear_rule):
    assert rule_registry.module_rule_for(ScaledLinear(2, 2)) is scaled_linear_rule
    assert rule_registry.module_rule_for(UnruledScaledLinear(2, 2)) is rule_registry.default_module_rule
    an = analyse(_net(UnruledScaledLinear), torch.randn(4, 6))
    assert all(i < 0 for ld in an.param_dims["2.weight"] for i, _ in ld)


def test_registration_refuses_duplicates_and_bad_targets(scaled_linear_rule):
    with pytest.raises(InvalidInputError, match="already registered"):
        register_module_rule(ScaledLinear)(lambda *a: None)
    with pytest.raises(InvalidInputError, match="Module subclasses"):
        register_module_rule(F.linear)
    with pytest.raises(InvalidInputError, match="already registered"):
        rule_registry.register_function_rule(F.linear)(lambda *a: None)
    with pytest.raises(InvalidInputError, match="method names"):
        rule_registry.register_method_rule("")


def test_registration_invalidates_cached_analyses(scaled_linear_rule):
    m = _net(ScaledLinear)
    x = torch.randn(4, 6)
    before = plan("heterofl", m, 0.3, example_input=x)
    del rule_registry._MODULE_RULES[ScaledLinear]
    register_module_rule(ScaledLinear)(rule_registry.default_module_rule)
    assert plan("heterofl", m, 0.3, example_input=x).index_map["2.weight"][0] is None
    assert before.index_map["2.weight"][0] is not None


@pytest.mark.parametrize("module_type", sorted(rule_registry._MODULE_RULES, key=lambda t: t.__qualname__),
                         ids=lambda t: t.__qualname__)
def test_every_module_rule_covers_plain_subclasses_only(module_type):
    """Each registered layer type: a subclass keeping ``forward`` inherits the rule, one
    rewriting it gets the default (whole channels), and the tracer treats the type as a leaf."""
    rule = rule_registry._MODULE_RULES[module_type]
    plain = type("Plain", (module_type,), {})
    custom = type("Custom", (module_type,), {"forward": lambda self, *a, **k: module_type.forward(self, *a, **k)})
    assert rule_registry._registered_module_rule(module_type) is rule
    assert rule_registry._registered_module_rule(plain) is rule
    assert rule_registry._registered_module_rule(custom) is None
    assert rule_registry.has_module_rule(module_type)
