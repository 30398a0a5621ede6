"""Reference models: registry, shapes, width scaling, errors, fx tracing, config rebuild.

The ``check_*`` helpers hold what every registered model must do; the tests below run them on
each name in the registry (so a new model is tested with no edit here), and
``test_model_registry.py`` runs them on a model registered from outside the package.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from edge_sdk import models
from edge_sdk.errors import InvalidInputError, UnknownNameError

torch.set_num_threads(1)

BUILT_IN = ["cnn1d", "mixer_tiny", "resnet18", "resnet8", "vit_tiny"]
SMALL_WIDTH = 0.25


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---- what every registered model must do --------------------------------------------------


def check_spec_matches_config(name: str) -> None:
    s = models.spec(name)
    assert dataclasses.is_dataclass(s) and s.name == name
    cfg = models.create(name).config
    assert (cfg.name, cfg.width, cfg.depth, cfg.num_classes) == (name, 1.0, s.default_depth, 10)
    assert cfg.input_shape == s.input_shape
    assert models.resolve_config(name) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 2.0  # type: ignore[misc]


def check_forward_shape(name: str, width: float, num_classes: int = 7, batch: int = 3) -> None:
    m = models.create(name, width=width, num_classes=num_classes)
    x = torch.randn(batch, *m.config.input_shape)
    with torch.no_grad():
        assert m(x).shape == (batch, num_classes)


def check_fx_traceable(name: str) -> None:
    m = models.create(name, width=SMALL_WIDTH).eval()
    gm = torch.fx.symbolic_trace(m)
    x = torch.randn(2, *m.config.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), m(x))
    # the trace keeps batch size symbolic
    with torch.no_grad():
        assert gm(torch.randn(5, *m.config.input_shape)).shape == (5, 10)


def check_config_round_trip(name: str) -> None:
    m = models.create(name, width=0.5, depth=2, num_classes=5)
    cfg = m.config
    same = models.create(cfg.name, width=cfg.width, depth=cfg.depth,
                         num_classes=cfg.num_classes, **cfg.options)  # fmt: skip
    assert same.config == cfg
    assert [p.shape for p in same.parameters()] == [p.shape for p in m.parameters()]
    other = models.create(cfg.name, width=SMALL_WIDTH, depth=cfg.depth,
                          num_classes=cfg.num_classes, **cfg.options)  # fmt: skip
    assert other.config.options == cfg.options and other.config.width == SMALL_WIDTH
    assert n_params(other) < n_params(m)
    # per instance, not global
    assert models.create(name).config.width == 1.0 and m.config.width == 0.5


def check_unknown_option_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown argument 'bogus'; accepted: width"):
        models.create(name, bogus=1)


# ---- run on every registered model --------------------------------------------------------


def test_names_sorted_and_hold_the_built_in_models():
    assert models.names() == sorted(models.names())
    assert set(BUILT_IN) <= set(models.names())


@pytest.mark.parametrize("name", models.names())
def test_spec_matches_created_config(name):
    check_spec_matches_config(name)


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("width", [1.0, SMALL_WIDTH])
def test_output_shapes(name, width):
    check_forward_shape(name, width)


@pytest.mark.parametrize("name", models.names())
def test_fx_traceable(name):
    check_fx_traceable(name)


@pytest.mark.parametrize("name", models.names())
def test_config_rebuild_at_other_width(name):
    check_config_round_trip(name)


@pytest.mark.parametrize("name", models.names())
def test_unknown_option_refused(name):
    check_unknown_option_refused(name)


# ---- the built-in models' own values ------------------------------------------------------


def test_spec_values():
    assert models.spec("resnet18").input_shape == (3, 32, 32)
    assert models.spec("cnn1d").input_shape == (1, 40)
    assert models.spec("vit_tiny").default_depth == 6
    assert models.spec("mixer_tiny").default_depth == 4


def test_parameter_counts_at_width_1():
    # Exact counts of the architectures as specified (CIFAR ResNet-18 is the well-known 11,173,962).
    expected = {
        "resnet18": 11_173_962,
        "resnet8": 78_042,
        "cnn1d": 12_202,
        "vit_tiny": 2_693_578,
        "mixer_tiny": 569_994,
    }
    assert {n: n_params(models.create(n)) for n in BUILT_IN} == expected


def test_resnet18_structure():
    m = models.create("resnet18")
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 1 + 16 + 3  # stem + 8 blocks x 2 + 3 projection shortcuts
    assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1)
    assert not any(isinstance(mod, nn.MaxPool2d) for mod in m.modules())
    assert [len(s) for s in m.layers] == [2, 2, 2, 2]
    assert m.fc.in_features == 512


def test_width_sets_channel_counts():
    assert models.create("resnet18", width=0.25).fc.in_features == 128
    vit = models.create("vit_tiny", width=0.5)
    assert vit.blocks[0].attn.heads == 3 and vit.blocks[0].attn.head_dim == 32
    assert vit.head.in_features == 96 and vit.blocks[0].mlp.fc1.out_features == 384
    # tiny widths keep at least one channel / one unit per head
    tiny = models.create("vit_tiny", width=1e-4)
    assert tiny.blocks[0].attn.head_dim == 1 and tiny.head.in_features == 3
    assert models.create("cnn1d", width=1e-4).fc.in_features == 5


# Size ratio r -> width sqrt(r) -> params ~ r * params(1). Only weights connecting two scaled
# dimensions scale as width^2; heads, biases, norms, the stem/patch conv (fixed input channels),
# the mixer's token MLP (fixed 64 tokens) and cnn1d's Flatten->Linear scale as width, so the
# ratio comes out above r by about (share of linear-in-width params) / sqrt(r). Tolerances
# are that share per model (measured: resnet18 0.1%/0.4%, resnet8 2%/7%, vit 1.5%/4.4%,
# mixer 8%/25%, cnn1d 16%/49% at r = 1/4 / 1/16) with headroom.
RATIO_TOL = {"resnet18": 0.01, "resnet8": 0.10, "vit_tiny": 0.06, "mixer_tiny": 0.30, "cnn1d": 0.55}


@pytest.mark.parametrize("name", sorted(RATIO_TOL))
def test_params_scale_with_ratio(name):
    full = n_params(models.create(name))
    sizes = []
    for r in (0.25, 1 / 16):
        m = models.create_at_ratio(name, r)
        assert m.config.width == pytest.approx(r**0.5)
        got = n_params(m) / full
        sizes.append(got)
        assert r * 0.97 <= got <= r * (1 + RATIO_TOL[name]), (name, r, got)
    assert sizes[0] > sizes[1]


def test_width_for_ratio():
    assert models.width_for_ratio(1.0) == 1.0
    assert models.width_for_ratio(0.25) == pytest.approx(0.5)
    for bad in (0, -0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(InvalidInputError, match="ratio"):
            models.width_for_ratio(bad)
    with pytest.raises(InvalidInputError, match="ratio"):
        models.create_at_ratio("resnet8", 2.0)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        models.create("resnet50")
    msg = str(info.value)
    assert "resnet50" in msg and all(n in msg for n in models.names())
    with pytest.raises(UnknownNameError):
        models.spec("nope")


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"width": 0}, "width"),
        ({"width": -1.0}, "width"),
        ({"width": float("inf")}, "width"),
        ({"width": "1"}, "width"),
        ({"depth": 0}, "depth"),
        ({"depth": 1.5}, "depth"),
        ({"num_classes": 0}, "num_classes"),
        ({"bogus": 1}, "bogus"),
        ({"norm": "layer"}, "norm"),
        ({"in_channels": 0}, "in_channels"),
        ({"track_running_stats": "yes"}, "track_running_stats"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, arg):
    with pytest.raises(InvalidInputError, match=arg):
        models.create("resnet8", **kwargs)


def test_bad_model_specific_arguments():
    with pytest.raises(InvalidInputError, match="patch_size"):
        models.create("vit_tiny", patch_size=5)
    with pytest.raises(InvalidInputError, match="act"):
        models.create("vit_tiny", act="swish")
    with pytest.raises(InvalidInputError, match="kernel_size"):
        models.create("cnn1d", kernel_size=4)
    with pytest.raises(InvalidInputError, match="heads"):
        models.create("mixer_tiny", heads=4)  # not an option of the mixer


def test_model_options():
    m = models.create("resnet8", in_channels=1, norm="none")
    assert m.config.input_shape == (1, 32, 32)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    g = models.create("resnet8", norm="group")
    assert any(isinstance(x, nn.GroupNorm) for x in g.modules())
    h = models.create("resnet18", width=0.25, track_running_stats=False)
    bns = [x for x in h.modules() if isinstance(x, nn.BatchNorm2d)]
    assert bns and all(b.running_mean is None for b in bns)
    v = models.create("vit_tiny", width=0.25, depth=2, norm="batchnorm", act="relu")
    assert not any(isinstance(x, (nn.LayerNorm, nn.GELU)) for x in v.modules())
    assert any(isinstance(x, nn.BatchNorm1d) for x in v.modules())
    assert v(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert models.create("vit_tiny", depth=3).blocks.__len__() == 3
    assert len(models.create("cnn1d", depth=5).features) == 15
    big = models.create("vit_tiny", width=0.25, img_size=64, patch_size=8, in_channels=1)
    assert big.pos_embed.shape[1] == 65 and big.config.input_shape == (1, 64, 64)


def test_no_fused_attention_modules():
    m = models.create("vit_tiny")
    assert not any(
        isinstance(x, (nn.MultiheadAttention, nn.TransformerEncoderLayer)) for x in m.modules()
    )
    assert isinstance(m.blocks, nn.Sequential)
    assert all(isinstance(b, models.ViTBlock) for b in m.blocks)


def test_config_options_not_shared():
    a = models.create("resnet8")
    a.config.options["norm"] = "none"  # mutating one instance's dict
    assert models.create("resnet8").config.options["norm"] == "batch"


@pytest.mark.parametrize("name", ["vit_tiny", "mixer_tiny"])
def test_model_from_block_subset_runs(name):
    m = models.create(name, width=0.25)
    keep = [0, 2] if name == "vit_tiny" else [1, 3]
    m.blocks = nn.Sequential(*[m.blocks[i] for i in keep])
    x = torch.randn(2, *m.config.input_shape)
    y = m(x)
    assert y.shape == (2, 10)
    y.sum().backward()
    assert m.blocks[0].norm1.weight.grad is not None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_vit_and_resnet8():
    import io

    import onnx

    for name in ("vit_tiny", "resnet8"):
        m = models.create(name, width=0.25, depth=1).eval()
        buf = io.BytesIO()
        torch.onnx.export(m, (torch.randn(1, *m.config.input_shape),), buf, dynamo=False)
        graph = onnx.load_from_string(buf.getvalue()).graph
        assert len(graph.node) > 0 and len(graph.output) == 1
