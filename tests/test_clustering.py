"""Capability clustering: tiers recovered, degenerate fleets, ratios, JSON, the `cluster` command."""

from __future__ import annotations

import argparse
import builtins
import json
import math

import numpy as np
import pytest

from edge_sdk.clustering import (
    DEFAULT_LADDER,
    Clustering,
    cluster_capabilities,
    parse_ladder,
    snap_down,
)
from edge_sdk.clustering import kde as kde_mod
from edge_sdk.cli import cluster_cmd
from edge_sdk.errors import (
    ClusteringError,
    EdgeSDKError,
    InvalidInputError,
    MissingDependencyError,
    SchemaError,
)
from edge_sdk.profiler.report import (
    Capacity,
    CapabilityReport,
    DeviceCapability,
    LatencyStats,
    ModelProfile,
    SizeCost,
)


# ---------------------------------------------------------------------------------------------
# helpers


def ari(a, b) -> float:
    """Adjusted Rand index, exact (Hubert & Arabie), without scikit-learn."""
    a = np.unique(np.asarray(a), return_inverse=True)[1]
    b = np.unique(np.asarray(b), return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    comb = lambda v: v * (v - 1) / 2.0  # noqa: E731
    index = comb(table).sum()
    rows, cols, total = comb(table.sum(1)).sum(), comb(table.sum(0)).sum(), comb(a.size)
    expected = rows * cols / total
    top = (rows + cols) / 2.0
    return 1.0 if top == expected else float((index - expected) / (top - expected))


def test_ari_helper_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 4, 200), rng.integers(0, 5, 200)
    b[:150] = a[:150]
    assert ari(a, b) == pytest.approx(sklearn.adjusted_rand_score(a, b))
    assert ari(a, a) == 1.0


def fleet(rng, centres, sizes, sigma):
    """Log-normal scores around each centre (GFLOP/s); returns scores, true tier."""
    x = np.concatenate([rng.normal(math.log(c), sigma, n) for c, n in zip(centres, sizes)])
    return np.exp(x), np.repeat(np.arange(len(centres)), sizes)


def make_report(
    device_id: str,
    score: float | None,
    *,
    gflops: float | None = None,
    memory_gb: float = 4.0,
    latency_ms: float | None = None,
    budget_ms: float | None = None,
    max_ratio: float | None = None,
    with_model: bool = True,
) -> CapabilityReport:
    gflops = score if gflops is None else gflops
    device = DeviceCapability(
        cpu_model="test", arch="aarch64", logical_cpus=4, effective_cpus=4, isa_flags=[],
        memory_total_bytes=int(memory_gb * 2**30), memory_available_bytes=int(memory_gb * 2**30),
        memory_limit_bytes=None, threads=4, gflops_fp32_1t=(gflops or 1.0) / 4, gflops_fp32=gflops,
        int8_gops=None, memory_bandwidth_gbs=5.0, estimated=True, source="hw:test",
    )
    model = None
    if with_model:
        sizes = []
        for ratio in (1.0, 0.5, 0.25, 0.125, 0.0625):
            lat = None
            if latency_ms is not None:
                lat = LatencyStats(cold_ms=2 * latency_ms, median_ms=latency_ms * ratio, p90_ms=latency_ms * ratio, runs=5)
            sizes.append(SizeCost(
                ratio=ratio, kept_fraction=ratio, width=math.sqrt(ratio), params=int(1e5 * ratio),
                param_bytes=int(4e5 * ratio), forward_flops=int(1e7 * ratio), train_step_flops=int(3e7 * ratio),
                peak_train_memory_bytes=int(1e7 * ratio), forward_latency=None, train_step_latency=lat,
            ))
        model = ModelProfile(model="cnn", input_shape=[1, 40], batch_size=32, sizes=sizes)
    capacity = Capacity(score=score, budget_ms=budget_ms, budget_mb=None, max_ratio=max_ratio)
    return CapabilityReport(device_id=device_id, created_at="2025-01-01T00:00:00Z", device=device,
                            capacity=capacity, model=model)


# ---------------------------------------------------------------------------------------------
# known tiers are recovered


@pytest.mark.parametrize(
    "centres,sizes,sigma,seed",
    [
        ((1.0, 3.0, 9.0, 27.0), (100, 100, 100, 100), 0.1, 0),  # balanced, 3x apart
        ((0.5, 1.5, 4.0, 12.0, 40.0), (3, 30, 8, 15, 4), 0.1, 1),  # unbalanced, small tiers
        ((2.0, 5.0, 12.0, 30.0, 80.0, 200.0), (2000, 300, 1500, 80, 900, 3000), 0.12, 2),  # binned KDE path
    ],
)
def test_known_tiers_recovered(centres, sizes, sigma, seed):
    scores, truth = fleet(np.random.default_rng(seed), centres, sizes, sigma)
    result = cluster_capabilities(list(scores))
    assert result.n_tiers == len(centres)
    assert ari(truth, result.labels) >= 0.95
    # Tier 0 is the weakest; ranges ascend and the cuts fall between them.
    assert [r[0] for r in result.score_ranges] == sorted(r[0] for r in result.score_ranges)
    for k, cut in enumerate(result.cuts):
        assert result.score_ranges[k][1] < cut <= result.score_ranges[k + 1][0]
    assert sum(len(m) for m in result.members) == len(scores)
    for k, ids in enumerate(result.members):
        assert all(result.tier_of(i) == k for i in ids)


def test_mapping_input_keeps_ids():
    result = cluster_capabilities({"pi-a": 4.0, "pi-b": 4.2, "jetson": 40.0, "gw": 41.0})
    assert result.client_ids == ["pi-a", "pi-b", "jetson", "gw"]
    assert result.members == [["pi-a", "pi-b"], ["jetson", "gw"]]
    assert result.ratio_of("gw") == 1.0
    assert result.ratio_of("pi-a") == 1 / 16  # 4 / 40 = 0.1 -> snapped down to 1/16
    with pytest.raises(InvalidInputError, match="nope"):
        result.tier_of("nope")


def test_scott_and_silverman_oversmooth_separated_tiers():
    scores, truth = fleet(np.random.default_rng(5), (1.0, 2.5, 6.0, 15.0, 40.0), (60,) * 5, 0.08)
    default = cluster_capabilities(scores)
    assert default.n_tiers == 5 and ari(truth, default.labels) >= 0.95
    for rule in ("scott", "silverman"):
        smooth = cluster_capabilities(scores, bandwidth=rule)
        assert smooth.bandwidth_rule == rule
        assert smooth.bandwidth > 2 * default.bandwidth
        assert smooth.n_tiers < 5


def test_binned_kde_matches_exact(monkeypatch):
    scores, _ = fleet(np.random.default_rng(7), (1.0, 3.0, 10.0), (2000, 1500, 1000), 0.1)
    x = np.log(scores)
    binned = kde_mod.cut_1d(x, 0.1, 1.0)
    monkeypatch.setattr(kde_mod, "BIN_ABOVE", 10**9)
    exact = kde_mod.cut_1d(x, 0.1, 1.0)
    assert len(binned.cuts) == len(exact.cuts) == 2
    assert np.allclose(binned.cuts, exact.cuts, atol=0.02)
    # a kernel moves by <= h/64: the log-density changes by < 0.01 nat near the peaks and
    # by a few hundredths of a nat 4 bandwidths out in the tails
    top = exact.log_density > exact.log_density.max() - 3
    assert np.allclose(binned.log_density[top], exact.log_density[top], atol=0.01)
    assert np.allclose(binned.log_density, exact.log_density, atol=0.08)


# ---------------------------------------------------------------------------------------------
# degenerate fleets


@pytest.mark.parametrize("empty", [[], {}, ()])
def test_no_clients_is_an_error(empty):
    with pytest.raises(ClusteringError, match="no clients"):
        cluster_capabilities(empty)


def test_one_client_is_one_tier_with_the_full_size():
    result = cluster_capabilities([3.5])
    assert result.n_tiers == 1 and result.method == "single-client"
    assert result.labels.tolist() == [0] and result.ratios == [1.0] and result.cuts == []
    assert result.density is not None and np.all(np.isfinite(result.density[1]))


def test_identical_scores_are_one_tier():
    result = cluster_capabilities([2.0] * 50)
    assert result.n_tiers == 1 and result.method == "identical-scores"
    assert result.ratios == [1.0]
    # scott/silverman give a zero width here; still one tier, no scipy error
    assert cluster_capabilities([2.0] * 5, bandwidth="scott").n_tiers == 1


def test_two_clients():
    assert cluster_capabilities([1.0, 1.2]).n_tiers == 1
    far = cluster_capabilities({"weak": 1.0, "strong": 4.0})
    assert far.members == [["weak"], ["strong"]]
    assert far.ratios == [0.25, 1.0]


def test_extreme_outlier_is_its_own_tier():
    rng = np.random.default_rng(0)
    scores = list(np.exp(rng.normal(0.0, 0.1, 40))) + [1e9]
    result = cluster_capabilities(scores)
    assert result.n_tiers == 2
    assert result.members[1] == ["40"]
    # The others are ~1e-9 of the reference: smallest size, with a warning per client.
    assert result.ratios == [DEFAULT_LADDER[-1], 1.0]
    assert any("40 clients" in w and "below 0.015625" in w for w in result.warnings)
    # Tiny outlier on the other side, with two huge gaps: still fine.
    assert cluster_capabilities([1e-12] + scores).n_tiers == 3


@pytest.mark.parametrize("factor,separate", [(1.3, False), (1.4, False), (1.8, True), (3.0, True)])
def test_lone_client_rule(factor, separate):
    # Documented rule: a lone client ~1.6x or more above its nearest neighbour is its own tier.
    base = np.exp(np.random.default_rng(6).normal(0.0, 0.1, 100))
    result = cluster_capabilities(list(base) + [base.max() * factor])
    assert result.n_tiers == (2 if separate else 1)
    if separate:
        assert result.members[1] == ["100"]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scores_name_the_client(bad):
    with pytest.raises(ClusteringError, match="'dev-b'"):
        cluster_capabilities({"dev-a": 1.0, "dev-b": bad})


@pytest.mark.parametrize("bad", [True, "3.0", None])
def test_non_numbers_are_refused(bad):
    with pytest.raises(ClusteringError, match="'1'.*not a number"):
        cluster_capabilities([1.0, bad])


def test_report_without_score_names_the_client():
    reports = [make_report("pi-1", 3.0), make_report("pi-2", None)]
    with pytest.raises(ClusteringError, match="'pi-2'.*capacity score"):
        cluster_capabilities(reports)
    reports[1].capacity.score = float("nan")
    with pytest.raises(ClusteringError, match="'pi-2'"):
        cluster_capabilities(reports)


def test_mixed_kinds_duplicates_and_bad_containers():
    with pytest.raises(ClusteringError, match="mix"):
        cluster_capabilities([make_report("a", 1.0), 2.0])
    with pytest.raises(ClusteringError, match="'a'.*more than once"):
        cluster_capabilities([make_report("a", 1.0), make_report("a", 2.0)])
    with pytest.raises(ClusteringError, match="expected a list"):
        cluster_capabilities(3.0)
    with pytest.raises(ClusteringError, match="expected a list"):
        cluster_capabilities("1,2,3")


def test_bad_options():
    with pytest.raises(InvalidInputError, match="features"):
        cluster_capabilities([1.0, 2.0], features="gpu")
    with pytest.raises(InvalidInputError, match="bandwidth"):
        cluster_capabilities([1.0, 2.0], bandwidth=0.0)
    with pytest.raises(InvalidInputError, match="bandwidth"):
        cluster_capabilities([1.0, 2.0], bandwidth="wide")
    with pytest.raises(InvalidInputError, match="prominence"):
        cluster_capabilities([1.0, 2.0], prominence=-1)


# ---------------------------------------------------------------------------------------------
# ladder and ratios


def test_parse_ladder():
    assert parse_ladder("1,1/4,1/16,1/64") == DEFAULT_LADDER
    assert parse_ladder(["1/64", 0.25, "1", "1/16", 0.25]) == DEFAULT_LADDER  # sorted, deduplicated
    assert parse_ladder((0.5,)) == (0.5,)
    for bad in ("", [], "0", "1/0", "2", "-1/4", "abc", [True], "nan", [float("inf")]):
        with pytest.raises(InvalidInputError, match="ladder"):
            parse_ladder(bad)
    with pytest.raises(InvalidInputError):
        cluster_capabilities([1.0, 2.0], ladder="1,3/2")


def test_snap_down():
    ladder = DEFAULT_LADDER
    assert snap_down(1.0, ladder) == 1.0
    assert snap_down(0.99, ladder) == 0.25
    assert snap_down(0.25, ladder) == 0.25
    assert snap_down(0.25 * (1 - 1e-12), ladder) == 0.25  # float noise does not drop a step
    assert snap_down(0.2, ladder) == 0.0625
    assert snap_down(0.01, ladder) is None


def test_score_rule_uses_weakest_member_against_top_tier():
    # Tiers around 1, 4, 16, 64 GFLOP/s; the top tier's weakest member (60) is the reference.
    scores = {"a1": 0.95, "a2": 1.05, "b1": 3.9, "b2": 4.1, "c1": 15.5, "c2": 16.5, "d1": 60.0, "d2": 70.0}
    result = cluster_capabilities(scores)
    assert result.n_tiers == 4
    # 0.95/60 = 0.0158 -> 1/64; 3.9/60 = 0.065 -> 1/16; 15.5/60 = 0.258 -> 1/4; top -> 1
    assert result.ratios == [1 / 64, 1 / 16, 1 / 4, 1.0]
    assert result.ratio_basis == ["score"] * 4
    custom = cluster_capabilities(scores, ladder="1,1/2,1/8")
    assert custom.ratios == [1 / 8, 1 / 8, 1 / 8, 1.0]  # 0.258 -> 1/8, not 1/2
    top_half = cluster_capabilities(scores, ladder=[0.5, 0.125])
    assert top_half.ratios[-1] == 0.5  # strongest tier gets ladder[0]


def test_budget_rule_snaps_max_ratio_down():
    reports = [
        make_report("pi-1", 4.0, budget_ms=50, max_ratio=0.5),
        make_report("pi-2", 4.2, budget_ms=50, max_ratio=0.125),
        make_report("gw-1", 60.0, budget_ms=50, max_ratio=1.0),
        make_report("gw-2", 62.0, with_model=False),  # no model profile: score rule
    ]
    result = cluster_capabilities(reports)
    assert result.members == [["pi-1", "pi-2"], ["gw-1", "gw-2"]]
    # weakest member (max_ratio 0.125) -> 1/16 on the default ladder
    assert result.ratios == [0.0625, 1.0]
    assert result.ratio_basis == ["budget", "mixed"]
    # A report with a model profile but no budget also uses the score rule.
    plain = cluster_capabilities([make_report("x", 1.0, max_ratio=1.0), make_report("y", 8.0, max_ratio=1.0)])
    assert plain.ratio_basis == ["score", "score"] and plain.ratios == [1 / 16, 1.0]


def test_budget_rule_nothing_fits():
    reports = [
        make_report("mcu", 0.2, budget_ms=10, max_ratio=None),
        make_report("pi", 0.21, budget_ms=10, max_ratio=1.0),
        make_report("gw", 50.0, budget_ms=10, max_ratio=0.01),  # below 1/64
    ]
    result = cluster_capabilities(reports)
    assert result.ratios == [None, None]
    assert any("client 'mcu' fits no size" in w for w in result.warnings)
    assert any("client 'gw' fits no size" in w for w in result.warnings)


# ---------------------------------------------------------------------------------------------
# multi-feature mode


def _multi_fleet(rng):
    classes = [("pi4", 4.0, 2.0), ("pi5", 12.0, 8.0), ("jetson", 40.0, 8.0), ("gw", 150.0, 32.0)]
    reports, truth = [], []
    for k, (name, gf, mem) in enumerate(classes):
        for i in range(25):
            g = gf * math.exp(rng.normal(0, 0.08))
            reports.append(make_report(
                f"{name}-{i}", g, memory_gb=mem * math.exp(rng.normal(0, 0.05)),
                latency_ms=500.0 / g * math.exp(rng.normal(0, 0.03)),
            ))
            truth.append(k)
    return reports, np.asarray(truth)


def test_multi_feature_mode_recovers_classes():
    reports, truth = _multi_fleet(np.random.default_rng(11))
    result = cluster_capabilities(reports, features="multi")
    assert result.method == "mean-shift"
    assert result.features == ["log_gflops", "log_memory", "log_train_latency"]
    assert result.cuts == [] and result.density is None
    assert ari(truth, result.labels) >= 0.95
    assert [r[0] for r in result.score_ranges] == sorted(r[0] for r in result.score_ranges)
    assert result.ratios[-1] == 1.0


def test_multi_feature_mode_separates_by_memory_alone():
    # Same throughput, 4x different memory: one tier by score, two by the multi features.
    rng = np.random.default_rng(2)
    reports = [make_report(f"small-{i}", 10 * math.exp(rng.normal(0, 0.05)), memory_gb=1.0, with_model=False)
               for i in range(12)]
    reports += [make_report(f"big-{i}", 10 * math.exp(rng.normal(0, 0.05)), memory_gb=8.0, with_model=False)
                for i in range(12)]
    assert cluster_capabilities(reports).n_tiers == 1
    multi = cluster_capabilities(reports, features="multi")
    assert multi.n_tiers == 2
    assert sorted(len(m) for m in multi.members) == [12, 12]
    assert any("latency left out" in w for w in multi.warnings)


def test_multi_feature_default_is_not_fooled_by_a_noise_feature():
    # Every device has ~4 GB (5 % noise): memory carries no tier. In ln units it stays a small
    # axis; z-scored (standardize=True) it weighs as much as throughput and splits the tiers.
    rng = np.random.default_rng(11)
    reports, truth = _multi_fleet(rng)
    for report in reports:
        report.device.memory_available_bytes = int(4 * 2**30 * math.exp(rng.normal(0, 0.05)))
    plain = cluster_capabilities(reports, features="multi")
    assert plain.n_tiers == 4 and ari(truth, plain.labels) >= 0.95
    zscored = cluster_capabilities(reports, features="multi", standardize=True)
    assert zscored.features[0] == "log_gflops (standardised)"
    assert zscored.n_tiers > 4


def test_multi_feature_degenerate_and_errors():
    with pytest.raises(ClusteringError, match="needs capability reports"):
        cluster_capabilities([1.0, 2.0], features="multi")
    one = cluster_capabilities([make_report("only", 3.0)], features="multi")
    assert one.n_tiers == 1 and one.ratios == [1.0]
    same = cluster_capabilities([make_report(f"d{i}", 3.0) for i in range(4)], features="multi")
    assert same.n_tiers == 1 and same.method == "identical-features"
    bad = make_report("broken", 3.0)
    bad.device.gflops_fp32 = 0.0
    with pytest.raises(ClusteringError, match="'broken'.*gflops"):
        cluster_capabilities([make_report("ok", 2.0), bad], features="multi")
    with pytest.raises(InvalidInputError, match="bandwidth"):
        cluster_capabilities([make_report("a", 1.0), make_report("b", 2.0)], features="multi", bandwidth="scott")


# ---------------------------------------------------------------------------------------------
# JSON


def test_to_dict_json_round_trip():
    scores, _ = fleet(np.random.default_rng(4), (1.0, 4.0, 16.0), (10, 5, 3), 0.1)
    result = cluster_capabilities({f"c{i}": s for i, s in enumerate(scores)}, ladder="1,1/2,1/4,1/8")
    doc = result.to_dict()
    text = json.dumps(doc)
    assert json.loads(text) == doc
    again = Clustering.from_dict(json.loads(text))
    assert again.to_dict() == doc
    assert again.labels.tolist() == result.labels.tolist()
    assert doc["tiers"][0]["members"] == result.members[0]
    assert [t["ratio"] for t in doc["tiers"]] == result.ratios
    with pytest.raises(SchemaError):
        Clustering.from_dict({"kind": "something else"})
    broken = dict(doc)
    del broken["tiers"]
    with pytest.raises(SchemaError, match="malformed"):
        Clustering.from_dict(broken)


# ---------------------------------------------------------------------------------------------
# the `edge-sdk cluster` command


def _parser():
    parser = argparse.ArgumentParser(prog="edge-sdk")
    sub = parser.add_subparsers(dest="command")
    cluster_cmd.register(sub)
    return parser


def _run(argv):
    args = _parser().parse_args(["cluster", *argv])
    return args.handler(args)


def _write_reports(tmp_path, reports):
    paths = []
    for report in reports:
        path = tmp_path / f"{report.device_id}.json"
        path.write_text(report.to_json())
        paths.append(str(path))
    return paths


def test_cli_table_and_json(tmp_path, capsys):
    rng = np.random.default_rng(8)
    reports = [make_report(f"pi-{i}", 5.0 * math.exp(rng.normal(0, 0.05))) for i in range(5)]
    reports += [make_report(f"gw-{i}", 64.0 * math.exp(rng.normal(0, 0.05))) for i in range(2)]
    paths = _write_reports(tmp_path, reports)
    out_json = tmp_path / "tiers.json"
    assert _run([*paths, "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    assert "tier" in table and "(+2 more)" in table and "1/16" in table
    doc = json.loads(out_json.read_text())
    assert [t["size"] for t in doc["tiers"]] == [5, 2]
    assert [t["ratio"] for t in doc["tiers"]] == [1 / 16, 1.0]

    assert _run([*paths, "--json", "-", "--ladder", "1,1/2,1/8"]) == 0
    stdout = capsys.readouterr().out
    doc = json.loads(stdout)  # only JSON on stdout
    assert [t["ratio"] for t in doc["tiers"]] == [0.125, 1.0]


def test_cli_reads_a_list_file_and_multi_features(tmp_path, capsys):
    reports, _ = _multi_fleet(np.random.default_rng(1))
    fleet_file = tmp_path / "fleet.json"
    fleet_file.write_text(json.dumps([r.to_dict() for r in reports]))
    assert _run([str(fleet_file), "--features", "multi", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["tiers"]) == 4 and doc["method"] == "mean-shift"


def test_cli_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    paths = _write_reports(tmp_path, [make_report("a", 1.0), make_report("b", 1.1), make_report("c", 9.0)])
    png = tmp_path / "kde.png"
    assert _run([*paths, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot written" in capsys.readouterr().out
    multi_png = tmp_path / "multi.png"
    assert _run([*paths, "--features", "multi", "--plot", str(multi_png)]) == 0
    assert multi_png.read_bytes()[:4] == b"\x89PNG"


def test_cli_plot_without_matplotlib(tmp_path, monkeypatch):
    paths = _write_reports(tmp_path, [make_report("a", 1.0)])
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependencyError, match=r'pip install "edge-fl-sdk\[plot\]"'):
        _run([*paths, "--plot", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_cli_bad_report_files_name_the_file(tmp_path):
    good = _write_reports(tmp_path, [make_report("a", 1.0)])[0]
    missing = tmp_path / "missing.json"
    with pytest.raises(InvalidInputError, match="missing.json: no such report file"):
        _run([good, str(missing)])
    not_json = tmp_path / "notes.json"
    not_json.write_text("hello")
    with pytest.raises(SchemaError, match="notes.json: not valid JSON"):
        _run([good, str(not_json)])
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema_version": 1, "device_id": "x"}))
    with pytest.raises(SchemaError, match="wrong.json: field '.*' is missing"):
        _run([good, str(wrong)])
    odd = tmp_path / "odd.json"
    doc = make_report("b", 2.0).to_dict()
    doc["model"]["sizes"] = [1]
    odd.write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match="odd.json"):
        _run([good, str(odd)])
    with pytest.raises(EdgeSDKError, match="bandwidth"):
        _run([good, "--bandwidth", "wide"])
    with pytest.raises(InvalidInputError, match="ladder"):
        _run([good, "--ladder", "1,2"])
    with pytest.raises(EdgeSDKError, match="folder"):
        _run([good, "--json", str(tmp_path / "no" / "such" / "out.json")])


def test_cli_report_without_score(tmp_path):
    doc = make_report("pi-9", 1.0).to_dict()
    doc["capacity"]["score"] = None
    path = tmp_path / "pi9.json"
    path.write_text(json.dumps(doc))
    good = _write_reports(tmp_path, [make_report("a", 1.0)])[0]
    # the report schema refuses it on reading, naming the file and the field
    with pytest.raises(SchemaError, match=r"pi9\.json\.capacity\.score must be a finite number"):
        _run([good, str(path)])


def test_cli_main_turns_errors_into_one_line(tmp_path, monkeypatch, capsys):
    import edge_sdk.cli as cli

    monkeypatch.setattr(cli, "_COMMAND_MODULES", ("edge_sdk.cli.cluster_cmd",))
    good = _write_reports(tmp_path, [make_report("a", 1.0), make_report("b", 8.0)])
    assert cli.main(["cluster", *good]) == 0
    assert "tier" in capsys.readouterr().out
    assert cli.main(["cluster", *good, str(tmp_path / "gone.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone.json" in err[0] and err[0].startswith("edge-sdk cluster: error:")
