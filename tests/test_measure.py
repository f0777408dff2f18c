"""Measurement on real models and real ESC-50 embeddings: latency harness, size, peak RAM, energy.

No assertion depends on how fast this machine is: timings are checked for structure (one entry
per call, statistics consistent with the raw timings), never against a speed.
"""
import os

import numpy as np
import pytest
import torch
from torch import nn

from qmoe.core.errors import ConfigError, DataError
from qmoe.experiments.results import COLUMNS
from qmoe.measure import energy, ram, suite, timing
from qmoe.models.experts import MLPExpert
from qmoe.models.registry import create_model


@pytest.fixture(scope="module")
def real_x(esc50):
    """Standardized embeddings of 48 held-out ESC-50 clips (fold 1), as the trained models see them."""
    train, test = esc50.split("major", "predefined", 1)
    mean, std = esc50.X[train].mean(0), esc50.X[train].std(0) + 1e-6
    return ((esc50.X[test[:48]] - mean) / std).astype(np.float32)


@pytest.fixture(scope="module")
def fp32(esc50):
    torch.manual_seed(0)
    return create_model("FP32-Base", esc50.dim, 5)


class RecordingModel(nn.Module):
    """Wraps a model and remembers every input it was called with."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        self.calls.append(x.clone())
        return self.inner(x)


def test_machine_info_names_cpu_threads_and_torch():
    info = timing.machine_info(threads=1)
    assert info["cpu_model"] and info["cpu_model"] != "unknown"
    assert info["threads"] == 1 and info["torch"] == torch.__version__
    assert info["logical_cpus"] == os.cpu_count()
    assert "torch" in timing.machine_label(info)


def test_per_sample_latency_times_each_distinct_sample_once_per_round(fp32, real_x):
    rec = RecordingModel(fp32)
    res = timing.latency(rec, real_x, rounds=3, warmup=4)
    assert res.mode == "per-sample" and res.timings_ms.shape == (3, len(real_x)) and res.n == 3 * len(real_x)
    timed = rec.calls[4:]  # after the warm-up calls
    assert len(timed) == res.n and all(c.shape == (1, real_x.shape[1]) for c in timed)
    first_round = torch.cat(timed[:len(real_x)]).numpy()
    np.testing.assert_array_equal(first_round, real_x)  # every distinct real sample, in order
    assert (res.timings_ms > 0).all()
    t = res.timings_ms.ravel()
    assert res.mean_ms == pytest.approx(t.mean()) and res.std_ms == pytest.approx(t.std(ddof=1))
    assert res.p50_ms == pytest.approx(np.median(t)) and res.p50_ms <= res.p99_ms <= t.max()
    assert res.call_median_ms.shape == (len(real_x),)
    assert res.summary()["machine"]["threads"] == 1


def test_batched_latency_drops_the_partial_batch(fp32, real_x):
    res = timing.latency(fp32, real_x[:45], batch_size=16, rounds=2, warmup=0)
    assert res.mode == "batched" and res.timings_ms.shape == (2, 2)
    assert res.per_item_ms == pytest.approx(res.mean_ms / 16)


def test_latency_restores_threads_and_training_mode(fp32, real_x):
    before = torch.get_num_threads()
    fp32.train()
    timing.latency(fp32, real_x[:8], rounds=1, warmup=1, threads=1 if before != 1 else 2)
    assert torch.get_num_threads() == before and fp32.training
    fp32.eval()


def test_latency_rejects_bad_inputs(fp32, real_x):
    bad = real_x[:4].copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        timing.latency(fp32, bad)
    with pytest.raises(DataError, match="2-D"):
        timing.latency(fp32, real_x[0])
    with pytest.raises(ConfigError, match="larger than"):
        timing.latency(fp32, real_x[:4], batch_size=5)
    with pytest.raises(ConfigError, match="threads"):
        timing.latency(fp32, real_x[:4], threads=0)


def test_param_count_and_bytes_of_fp32_and_int8_ptq(esc50, fp32):
    d = esc50.dim
    expected = (d * 640 + 640) + 2 * 640 + (640 * 320 + 320) + 2 * 320 + (320 * 5 + 5)
    assert timing.param_count(fp32) == expected
    assert timing.model_bytes(fp32) == 4 * expected  # float32, no packed form
    ptq = torch.ao.quantization.quantize_dynamic(MLPExpert(d, 5).eval(), {nn.Linear}, dtype=torch.qint8)
    assert timing.param_count(ptq) == expected  # packed int8 weights still count
    assert timing.model_bytes(ptq) < 0.3 * timing.model_bytes(fp32)


def test_model_bytes_prefers_the_packed_form(esc50):
    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(esc50.dim, 5)

        def packed(self):
            p = nn.Module()
            p.nbytes = 1234
            return p

    assert timing.model_bytes(Packed()) == 1234
    assert timing.state_dict_bytes(Packed()) == 4 * (esc50.dim * 5 + 5)


def test_peak_rss_is_the_childs_own_and_sees_the_model(esc50, fp32, real_x):
    ballast = np.ones(600 * 2**20 // 8)  # the parent grows by 600 MB; the child must not inherit it
    parent_peak = ram._peak_rss_mb()
    small = ram.peak_rss(fp32, real_x)
    del ballast
    assert 0 < small["baseline_rss_mb"] <= small["peak_rss_mb"] < parent_peak
    big = ram.peak_rss(MLPExpert(esc50.dim, 5, hidden=(4096, 4096)), real_x)  # ~22M params, ~88 MB
    assert big["model_rss_mb"] > small["model_rss_mb"] + 50
    assert "VmHWM" in big["rss_method"]


def test_energy_tracker_is_offline_quiet_and_says_how_it_estimated(fp32, real_x, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    with energy.EnergyTracker(n_items=len(real_x)) as et:
        with torch.inference_mode():
            for _ in range(200):
                fp32(torch.from_numpy(real_x))
    rec = et.record
    assert rec.energy_kwh > 0 and rec.duration_s > 0 and rec.n_items == len(real_x)
    assert rec.g_per_kwh == energy.PAPER_G_PER_KWH
    assert rec.co2_g == pytest.approx(rec.energy_kwh * 367.0)
    assert rec.codecarbon_co2_g == pytest.approx(rec.co2_g, rel=1e-6)  # codecarbon used the forced intensity
    assert rec.energy_mj == pytest.approx(rec.energy_kwh * 3.6e9)
    assert rec.energy_per_item_mj == pytest.approx(rec.energy_mj / len(real_x))
    has_rapl = os.path.exists("/sys/class/powercap/intel-rapl")
    assert rec.measured == has_rapl
    if not has_rapl:
        assert "estimated" in rec.energy_method and "TDP" in rec.energy_method
    assert list(tmp_path.iterdir()) == []  # no emissions.csv in the working directory
    assert "codecarbon" not in capfd.readouterr().err


def test_country_intensity_used_when_none_is_forced():
    recs = {}
    for country in ("IRL", "FRA"):
        with energy.EnergyTracker(g_per_kwh=None, country=country) as et:
            sum(range(300_000))
        recs[country] = et.record
    assert recs["FRA"].g_per_kwh < recs["IRL"].g_per_kwh  # nuclear France vs gas-heavy Ireland
    for r in recs.values():
        assert r.co2_g == pytest.approx(r.codecarbon_co2_g, rel=1e-6)


def test_inference_energy_counts_the_samples_it_ran(fp32, real_x):
    rec = energy.inference_energy(fp32, real_x, min_seconds=0.5)
    assert rec.n_items >= len(real_x) and rec.n_items % len(real_x) == 0
    assert rec.energy_per_item_mj == pytest.approx(rec.energy_mj / rec.n_items) and rec.energy_per_item_mj > 0
    assert rec.co2_per_item_ug == pytest.approx(rec.energy_per_item_mj / 3.6e9 * 367.0 * 1e6)


def test_tracker_rejects_bad_settings():
    with pytest.raises(ConfigError, match="country"):
        energy.EnergyTracker(country="Ireland")
    with pytest.raises(ConfigError, match="intensity"):
        energy.EnergyTracker(g_per_kwh=-1)
    with pytest.raises(ConfigError, match="tracking_mode"):
        energy.EnergyTracker(tracking_mode="gpu")


def test_deployment_projection_reproduces_the_papers_arithmetic():
    # Appendix A.1: FP32-Base, 1M inferences/day for a year at 367 g/kWh -> 2.4 g; training 22.8 ug -> ~105,000x.
    per_inference_mj = 2.4 / (1e6 * 365) / 367.0 * 3.6e9
    proj = energy.deployment_projection(per_inference_mj, 1e6)
    assert proj["inferences"] == 365e6 and proj["co2_g"] == pytest.approx(2.4)
    assert proj["energy_kwh"] == pytest.approx(2.4 / 367.0)
    ratio = energy.deployment_to_training_ratio(proj["co2_g"], 22.8)
    assert ratio == pytest.approx(2.4e6 / 22.8) and 1.0e5 < ratio < 1.1e5
    assert energy.deployment_projection(per_inference_mj, 2e6, days=30)["co2_g"] == pytest.approx(2 * 2.4 * 30 / 365)
    with pytest.raises(ConfigError):
        energy.deployment_projection(-1.0, 1e6)
    with pytest.raises(ConfigError):
        energy.deployment_to_training_ratio(1.0, 0.0)
    assert energy.f1_per_mj(0.8, 0.2) == pytest.approx(4.0)


def test_measure_model_fills_the_results_columns(fp32, real_x):
    row = suite.measure_model(fp32, real_x[:16], batch_size=8, rounds=2, rss=False, energy=False)
    wanted = {"params", "model_bytes", "latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p99",
              "batch_latency_ms_mean"}
    assert wanted <= set(row) and wanted <= set(COLUMNS)
    assert row["params"] == timing.param_count(fp32) and row["latency_n"] == 32
    assert row["machine"]["cpu_model"]


def test_onnx_runtime_is_measured_in_a_process_without_torch(fp32, real_x):
    from qmoe.deploy.runtime import load

    deployed = load(fp32, "onnxruntime")
    onnx = ram.peak_rss(deployed, real_x)
    assert onnx["torch_loaded"] is False and 0 < onnx["baseline_rss_mb"] <= onnx["peak_rss_mb"]
    torch_ram = ram.peak_rss(fp32, real_x)
    assert onnx["peak_rss_mb"] < torch_ram["peak_rss_mb"]  # a device's runtime, not the training framework
    row = suite.measure_model(fp32, real_x[:16], runtime="onnxruntime", batch_size=8, rounds=2, rss=False,
                                energy=False)
    assert row["runtime"] == "onnxruntime" and row["onnx_bytes"] == deployed.nbytes > 4e6
    assert row["latency_n"] == 32 and row["params"] == timing.param_count(fp32)
    assert suite.measure_model(fp32, real_x[:8], rounds=1, rss=False, energy=False)["runtime"] == "torch-eager"


def test_results_show_each_runtimes_figures_and_never_mix_them():
    from qmoe.experiments.results import runtime_view

    rec = {"runtime": "onnxruntime", "latency_ms_mean": 0.05, "energy_mj": 1.0, "f1_macro": 0.7,
           "by_runtime": {"torch-eager": {"latency_ms_mean": 1.2, "energy_mj": 14.0}}}
    assert runtime_view(rec)["latency_ms_mean"] == 0.05 and runtime_view(rec)["runtime"] == "onnxruntime"
    eager = runtime_view(rec, "torch-eager")
    assert (eager["latency_ms_mean"], eager["energy_mj"], eager["f1_macro"], eager["runtime"]) == (1.2, 14.0, 0.7,
                                                                                                   "torch-eager")
    assert eager["peak_rss_mb"] is None  # not measured on that runtime: no figure, rather than another's
    old = {"latency_ms_mean": 2.0}  # cached before runtimes were recorded: timed on the engine's torch path
    assert runtime_view(old)["runtime"] == "torch-eager" and runtime_view(old, "onnxruntime")["latency_ms_mean"] is None
    assert {"runtime", "onnx_bytes", "onnx_agreement"} <= set(COLUMNS)
