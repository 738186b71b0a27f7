"""One settings object for every stage, server and manifest.

Every field is read from one environment variable (named in ``ENV``); the
defaults are the embedded local mode (no cluster). Manifests and the Helm chart
set the same variable names, and a test cross-checks them against ``ENV``.
Credentials use the standard AWS names that KServe's storage initializer,
s3fs/Feast and the minio client all understand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from smart_energy.components.errors import SmartEnergyError


def _checkout() -> Path | None:
    """The source checkout this code runs from (editable install), or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "feature_repo").is_dir() else None


CHECKOUT = _checkout()
# Feast's repo as shipped: feature_repo/ in the checkout, smart_energy/feature_repo/ in a wheel
PACKAGED_FEATURE_REPO = Path(__file__).resolve().parent.parent / "feature_repo"
# Where the embedded mode keeps its data, artifact store and (for an installed wheel) its feature repo:
# SE_HOME, else the checkout, else the user's data directory.
HOME = Path(os.environ.get("SE_HOME") or CHECKOUT or
            Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "smart-energy")

# field name -> environment variable
ENV: dict[str, str] = {
    "data_root": "SE_DATA_ROOT",
    "artifact_uri": "SE_ARTIFACT_URI",
    "meter_id": "SE_METER_ID",
    "model_name": "SE_MODEL_NAME",
    "dayahead_model_name": "SE_DAYAHEAD_MODEL_NAME",
    "feature_repo": "SE_FEATURE_REPO",
    "feature_source": "SE_FEATURE_SOURCE",
    "feast_registry": "SE_FEAST_REGISTRY",
    "online_store": "SE_ONLINE_STORE",
    "redis_connection": "SE_REDIS_CONNECTION",
    "s3_endpoint": "S3_ENDPOINT",
    "s3_use_https": "S3_USE_HTTPS",
    "s3_region": "AWS_REGION",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "min_minutes_per_hour": "SE_MIN_MINUTES_PER_HOUR",
    "max_quarantine_fraction": "SE_MAX_QUARANTINE_FRACTION",
    "predictor_host": "SE_PREDICTOR_HOST",
    "prometheus_url": "SE_PROMETHEUS_URL",
    "pushgateway_url": "SE_PUSHGATEWAY_URL",
    "namespace": "SE_NAMESPACE",
    "inference_service": "SE_INFERENCE_SERVICE",
    "canary_steps": "SE_CANARY_STEPS",
    "canary_hold_seconds": "SE_CANARY_HOLD_SECONDS",
    "max_error_rate": "SE_MAX_ERROR_RATE",
    "max_p99_latency_seconds": "SE_MAX_P99_LATENCY_SECONDS",
    "max_mae_ratio": "SE_MAX_MAE_RATIO",
    "drift_window": "SE_DRIFT_WINDOW",
    "drift_p_value": "SE_DRIFT_P_VALUE",
    "drift_share": "SE_DRIFT_SHARE",
    "retrain_mae_ratio": "SE_RETRAIN_MAE_RATIO",
    "retrain_cooldown_hours": "SE_RETRAIN_COOLDOWN_HOURS",
    "model_repository_routes": "SE_MODEL_REPOSITORY_ROUTES",
    "tariff_prices": "SE_TARIFF_PRICES",
    "tariff": "SE_TARIFF",
    "engine": "SE_ENGINE",
    "spark_master": "SE_SPARK_MASTER",
    "spark_partitions": "SE_SPARK_PARTITIONS",
    "spark_driver_memory": "SE_SPARK_DRIVER_MEMORY",
    "xgb_threads": "SE_XGB_THREADS",
    "stale_after_hours": "SE_STALE_AFTER_HOURS",
}


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
# settings that take one of a few words, and the numeric ones that have bounds: (low, high), inclusive
CHOICES: dict[str, tuple[str, ...]] = {"online_store": ("sqlite", "redis"), "engine": ("embedded", "spark"),
                                       "tariff": ("base", "hp-hc", "tempo")}
BOUNDS: dict[str, tuple[float, float]] = {
    "min_minutes_per_hour": (1, 60), "max_quarantine_fraction": (0, 1), "drift_window": (2, 10**6),
    "drift_p_value": (0, 1), "drift_share": (0, 1), "max_error_rate": (0, 1), "max_mae_ratio": (0, 100),
    "max_p99_latency_seconds": (0, 3600), "canary_hold_seconds": (0, 10**7), "retrain_mae_ratio": (0, 100),
    "retrain_cooldown_hours": (0, 10**5), "spark_partitions": (1, 10**5), "xgb_threads": (0, 4096),
    "stale_after_hours": (1, 24 * 365),
}


class SettingsError(SmartEnergyError):
    """An SE_* (or AWS_*/S3_*) variable whose value cannot be used; the message names it."""


def _as_bool(text: str, name: str = "") -> bool:
    word = text.strip().lower()
    if word not in _TRUE | _FALSE:
        raise SettingsError(f"{name}={text!r}: not a boolean; use true or false")
    return word in _TRUE


def _convert(name: str, default, raw: str):
    """The environment's text as the type of the field's default; a wrong value names the variable."""
    variable = ENV[name]
    if isinstance(default, bool):
        return _as_bool(raw, variable)
    if isinstance(default, Path):
        return Path(raw)
    try:
        return type(default)(raw.strip() if isinstance(default, (int, float)) else raw)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise SettingsError(f"{variable}={raw!r}: not {kind} (default {default})") from None


@dataclass(frozen=True)
class Settings:
    """Configuration of the whole platform, one field per environment variable."""

    data_root: Path = HOME / "data"
    artifact_uri: str = (HOME / "artifacts").as_uri()
    meter_id: str = "household-1"
    model_name: str = "energy-forecaster"  # the next-hour model, and its InferenceService
    dayahead_model_name: str = "energy-forecaster-dayahead"  # the day-ahead (P10/P50/P90) model, and its InferenceService
    feature_repo: Path = HOME / "feature_repo"  # a wheel's is seeded from PACKAGED_FEATURE_REPO on first use
    feature_source: str = "data/hourly_features.parquet"  # relative to feature_repo, or s3://...
    feast_registry: str = ""  # empty: feature_store.yaml's registry
    online_store: str = "sqlite"  # sqlite | redis
    redis_connection: str = "127.0.0.1:6379"
    s3_endpoint: str = ""  # host:port of MinIO / S3; empty means AWS default
    s3_use_https: bool = False
    s3_region: str = "us-east-1"
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    min_minutes_per_hour: int = 45
    max_quarantine_fraction: float = 0.05
    predictor_host: str = "127.0.0.1:8081"
    prometheus_url: str = "http://127.0.0.1:9090"
    pushgateway_url: str = ""  # host:port of a Prometheus Pushgateway; empty: batch jobs report nothing
    namespace: str = "smart-energy"
    inference_service: str = "energy-forecaster"
    canary_steps: str = "10,25,50,100"
    canary_hold_seconds: float = 300.0
    max_error_rate: float = 0.01
    max_p99_latency_seconds: float = 0.05
    max_mae_ratio: float = 1.05
    drift_window: int = 168
    drift_p_value: float = 0.05
    drift_share: float = 0.5  # data drift: at least this share of the watched features drifted
    # the closed loop retrains on data drift, or when the served MAE over the last drift_window scored hours
    # reaches this multiple of persistence's on the same hours; at most once per cooldown
    retrain_mae_ratio: float = 1.0
    retrain_cooldown_hours: int = 72
    # KServe's /v2/repository/models/<name>/load|unload routes: unauthenticated, so off unless an operator asks
    model_repository_routes: bool = False
    # JSON price overrides (EUR/kWh) of components/tariffs.py's table, e.g. {"hp-hc": {"peak": 0.21}}
    tariff_prices: str = ""
    tariff: str = "hp-hc"  # what the transformer prices a day-ahead forecast with: base | hp-hc | tempo
    # where a fleet's features are built and the model trained: embedded (pandas, DuckDB, xgboost) or spark
    # (Feast's Spark offline store and Spark materialisation, the feature function per shard of meters,
    # xgboost.spark); the same definitions and feature code either way
    engine: str = "embedded"
    spark_master: str = ""  # empty: spark-submit's master (a SparkApplication), else local[*]
    spark_partitions: int = 8  # shards of meters the feature build and materialisation run in
    spark_driver_memory: str = "2g"  # local mode's JVM (driver and executors); a SparkApplication sets its own
    # XGBoost's threads (training, the predictor, Spark's driver-side predictions); 0: the container's CPU limit
    # (cgroup v2 cpu.max or the v1 quota), else the CPUs this process may run on (components/threads.py)
    xgb_threads: int = 0
    # a meter whose last complete hour is older than this (before the hour forecast) is stale: it gets the
    # profile fallback, not a model forecast made from missing lags (components/online_rows.py)
    stale_after_hours: int = 3

    @property
    def feature_source_path(self) -> str:
        """The Feast FileSource: an s3:// URI, or an absolute path (a relative one is the feature repo's)."""
        if "://" in self.feature_source:
            return self.feature_source
        return str((Path(self.feature_repo) / self.feature_source).resolve())

    @property
    def s3_endpoint_url(self) -> str:
        """The S3 endpoint as a URL (for s3fs / Feast); empty when none is set."""
        if not self.s3_endpoint or "://" in self.s3_endpoint:
            return self.s3_endpoint
        return f"{'https' if self.s3_use_https else 'http'}://{self.s3_endpoint}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        """Build settings from environment variables, falling back to defaults."""
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(ENV[f.name])
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, getattr(cls, f.name), raw)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse a value outside its choices or bounds, naming its environment variable."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise SettingsError(f"{ENV[name]}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise SettingsError(f"{ENV[name]}={value!r}: must be between {low:g} and {high:g}")
        from smart_energy.components.rollout_policy import parse_steps

        try:
            parse_steps(self.canary_steps)
        except ValueError as err:
            raise SettingsError(f"{ENV['canary_steps']}: {err} (e.g. 10,25,50,100)") from None

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables (for subprocesses and manifests)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[ENV[f.name]] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


def get_settings() -> Settings:
    """Settings for this process, from its environment."""
    return Settings.from_env()
