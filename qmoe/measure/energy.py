"""Energy and CO2 with codecarbon's offline tracker, and the paper's deployment projection (App. A.1).

Most machines (this one included) have no power counters: codecarbon then *estimates* power
(CPU: TDP from its table x this process's CPU share; RAM: a constant from a DIMM heuristic) and
multiplies by the duration. Every record says which it was in `measured` and `energy_method`,
so no figure passes for a measurement when it is a model.

CO2 = energy x grid intensity. The default intensity is the paper's scenario, 367 g CO2/kWh;
codecarbon is given it (`force_carbon_intensity_g_co2e_kwh`) and we also compute it ourselves,
recording both. `g_per_kwh=None` uses codecarbon's figure for `country` instead.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..core.errors import ConfigError

PAPER_G_PER_KWH = 367.0  # Appendix A.1
DEFAULT_COUNTRY = "IRL"
KWH_TO_MJ = 3.6e9  # 1 kWh = 3.6e6 J = 3.6e9 mJ
MEASURED_CPU_MODES = {"intel_rapl": "RAPL energy counters", "intel_power_gadget": "Intel Power Gadget",
                      "windows_emi": "Windows Energy Meter Interface"}


@dataclass(frozen=True)
class EnergyRecord:
    """Energy of one tracked block of work (`n_items` samples, or 1 for a training run)."""

    duration_s: float
    energy_kwh: float
    cpu_energy_kwh: float
    ram_energy_kwh: float
    cpu_power_w: float
    ram_power_w: float
    co2_g: float  # energy_kwh x g_per_kwh, computed here
    codecarbon_co2_g: float  # codecarbon's own figure (equal when the intensity is forced)
    g_per_kwh: float
    country: str
    measured: bool  # True only if hardware power counters were read
    energy_method: str
    n_items: int = 1

    @property
    def energy_mj(self) -> float:
        return self.energy_kwh * KWH_TO_MJ

    @property
    def co2_ug(self) -> float:
        return self.co2_g * 1e6

    @property
    def energy_per_item_mj(self) -> float:
        return self.energy_mj / self.n_items

    @property
    def co2_per_item_ug(self) -> float:
        return self.co2_ug / self.n_items

    def to_dict(self) -> dict:
        return {**asdict(self), "energy_mj": self.energy_mj, "co2_ug": self.co2_ug,
                "energy_per_item_mj": self.energy_per_item_mj, "co2_per_item_ug": self.co2_per_item_ug}


def _describe(tracker, data) -> tuple[bool, str]:
    """Whether codecarbon measured or estimated, in words, read from the hardware it chose."""
    import codecarbon

    parts, measured = [], False
    for hw in getattr(tracker, "_hardware", []):
        kind = type(hw).__name__
        mode = getattr(hw, "_mode", None)
        if kind == "CPU":
            if mode in MEASURED_CPU_MODES:
                measured = True
                parts.append(f"CPU power measured with {MEASURED_CPU_MODES[mode]}")
            elif mode == "cpu_load":
                generic = " (generic value)" if getattr(hw, "_is_generic_tdp", False) else ""
                share = ("this process's CPU time share" if getattr(hw, "_tracking_mode", "") == "process"
                         else "the machine's CPU load")
                parts.append(f"CPU power estimated as TDP {hw._tdp} W for '{getattr(hw, '_model', '?')}'"
                             f"{generic} x {share}")
            else:
                parts.append(f"CPU power a constant fraction of TDP {getattr(hw, '_tdp', '?')} W (no load data)")
        elif kind == "RAM":
            parts.append(f"RAM power a constant {data.ram_power:.1f} W (codecarbon's DIMM heuristic)")
        elif kind == "AppleSiliconChip":
            measured = True
            parts.append("Apple Silicon power measured with powermetrics")
        elif kind == "GPU":
            measured = True
            parts.append("GPU power measured with NVML")
    how = "measured" if measured else "estimated: no power counters on this machine"
    return measured, f"codecarbon {codecarbon.__version__} {how}; " + "; ".join(parts) + "; energy = power x duration"


class EnergyTracker:
    """Context manager around a block of work; `record` holds its `EnergyRecord` afterwards.

        with EnergyTracker(n_items=len(X)) as et:
            for x in X: model(x)
        et.record.energy_per_item_mj

    Writes no file (no CSV in the working directory) and keeps codecarbon quiet. Tracking mode
    "process" counts only this process's CPU time, which matters on a shared machine.
    """

    def __init__(self, n_items: int = 1, *, g_per_kwh: float | None = PAPER_G_PER_KWH,
                 country: str = DEFAULT_COUNTRY, tracking_mode: str = "process", measure_power_secs: float = 1.0):
        if not isinstance(n_items, int) or n_items < 1:
            raise ConfigError(f"n_items must be a positive integer, got {n_items!r}")
        if g_per_kwh is not None and not (np.isfinite(g_per_kwh) and g_per_kwh >= 0):
            raise ConfigError(f"grid intensity must be >= 0 g CO2/kWh, got {g_per_kwh!r}")
        if tracking_mode not in ("process", "machine"):
            raise ConfigError(f"tracking_mode must be 'process' or 'machine', got {tracking_mode!r}")
        if not (isinstance(country, str) and len(country) == 3 and country.isalpha()):
            raise ConfigError(f"country must be a 3-letter ISO code such as 'IRL', got {country!r}")
        self.n_items, self.g_per_kwh, self.country = n_items, g_per_kwh, country.upper()
        self.tracking_mode, self.measure_power_secs = tracking_mode, measure_power_secs
        self.record: EnergyRecord | None = None
        self._tracker = None

    def __enter__(self) -> "EnergyTracker":
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self._tmp = tempfile.TemporaryDirectory(prefix="qmoe-codecarbon-")
        kw = {"force_carbon_intensity_g_co2e_kwh": self.g_per_kwh} if self.g_per_kwh is not None else {}
        try:
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country, project_name="qmoe", output_methods=[], output_dir=self._tmp.name,
                log_level="error", tracking_mode=self.tracking_mode,
                measure_power_secs=self.measure_power_secs, allow_multiple_runs=True, **kw)
        except Exception as e:
            self._tmp.cleanup()
            raise ConfigError(f"codecarbon could not start ({e}); check the country code {self.country!r}") from e
        self._tracker.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._tracker.stop()
            data = self._tracker.final_emissions_data
            measured, method = _describe(self._tracker, data)
            g_per_kwh = self.g_per_kwh
            if g_per_kwh is None:  # codecarbon's intensity for the country, recovered from its figures
                g_per_kwh = data.emissions * 1000 / data.energy_consumed if data.energy_consumed > 0 else float("nan")
            self.record = EnergyRecord(
                duration_s=float(data.duration), energy_kwh=float(data.energy_consumed),
                cpu_energy_kwh=float(data.cpu_energy), ram_energy_kwh=float(data.ram_energy),
                cpu_power_w=float(data.cpu_power), ram_power_w=float(data.ram_power),
                co2_g=float(data.energy_consumed) * g_per_kwh, codecarbon_co2_g=float(data.emissions) * 1000,
                g_per_kwh=float(g_per_kwh), country=self.country, measured=measured,
                energy_method=method + f"; CO2 = energy x {g_per_kwh:.0f} g/kWh", n_items=self.n_items)
        finally:
            self._tmp.cleanup()


def inference_energy(model, x, *, batch_size: int = 1, min_seconds: float = 2.0,
                     threads: int = 1, **tracker_kw) -> EnergyRecord:
    """Energy per inference of `model` (a runtime model or an nn.Module, as `qmoe.measure.timing.latency` takes it):
    repeat passes over the rows of `x` for at least `min_seconds`.

    A pass of a few hundred samples lasts milliseconds, far below codecarbon's resolution, so
    the work is repeated and divided by the number of samples actually processed.
    """
    from .timing import _as_inputs, running

    x = _as_inputs(x)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(x):
        raise ConfigError(f"batch_size must be between 1 and {len(x)}, got {batch_size!r}")
    if not min_seconds > 0:
        raise ConfigError(f"min_seconds must be > 0, got {min_seconds!r}")
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    with running(model, threads) as run:
        for b in batches[:5]:  # warm-up outside the tracked block
            run(b)
        with EnergyTracker(**tracker_kw) as et:
            t_end = time.perf_counter() + min_seconds
            n_items = 0
            while time.perf_counter() < t_end:
                for b in batches:
                    run(b)
                    n_items += len(b)
            et.n_items = n_items  # known only now; read when the block closes
    return et.record


def f1_per_mj(f1: float, energy_mj: float) -> float:
    """The paper's efficiency: macro-F1 per mJ per inference (Table 3 'Eff')."""
    return float(f1) / float(energy_mj) if energy_mj > 0 else float("nan")


def deployment_projection(energy_per_inference_mj: float, inferences_per_day: float, days: float = 365,
                          g_per_kwh: float = PAPER_G_PER_KWH) -> dict:
    """Energy and CO2 of serving `inferences_per_day` for `days` (paper Appendix A.1)."""
    for name, v in (("energy_per_inference_mj", energy_per_inference_mj), ("inferences_per_day", inferences_per_day),
                    ("days", days), ("g_per_kwh", g_per_kwh)):
        if not (isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
    inferences = float(inferences_per_day) * float(days)
    energy_kwh = energy_per_inference_mj * inferences / KWH_TO_MJ
    return {"inferences": inferences, "energy_kwh": energy_kwh, "co2_g": energy_kwh * g_per_kwh,
            "days": float(days), "inferences_per_day": float(inferences_per_day), "g_per_kwh": float(g_per_kwh)}


def deployment_to_training_ratio(deployment_co2_g: float, training_co2_ug: float) -> float:
    """How many times the deployment emissions exceed the training emissions (paper: ~1e5 for 1M/day)."""
    if not training_co2_ug > 0:
        raise ConfigError(f"training CO2 must be > 0 ug, got {training_co2_ug!r}")
    return float(deployment_co2_g) * 1e6 / float(training_co2_ug)
