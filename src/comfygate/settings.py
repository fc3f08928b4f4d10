"""Typed settings, read from the environment once and passed down.

This is the only module that reads ``os.environ``. Every setting is declared in ``SETTINGS`` with its
environment variable, type, default and help text; ``comfygate settings`` prints them, and a test fails
when one is undocumented.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Settings", "SettingSpec", "SETTINGS", "SettingsError"]


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class SettingSpec:
    name: str
    env: str
    help: str
    parse: Callable[[str], Any] = str


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _paths(raw: str) -> tuple[Path, ...]:
    """Comma-separated paths; blanks around commas and empty entries are ignored."""
    return tuple(Path(part.strip()) for part in raw.split(",") if part.strip())


def _engine(raw: str) -> str:
    name = raw.strip().lower()
    if name not in ("builtin", "comfyui"):
        raise ValueError("expected builtin or comfyui")
    return name


def _limit(parse: Callable[[str], float]) -> Callable[[str], Any]:
    """A rate limit or quota: a finite number >= 0, where 0 means no limit."""

    def checked(raw: str) -> float:
        value = parse(raw)
        if not 0 <= value < float("inf"):
            raise ValueError("expected a number >= 0 (0: no limit)")
        return value

    return checked


def _names(raw: str) -> tuple[str, ...]:
    """Comma-separated names; blanks around commas and empty entries are ignored."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("data_dir", "COMFYGATE_DATA_DIR",
                "Folder for the embedded default: SQLite file, broker folders, local outputs. Default ./data.",
                Path),
    SettingSpec("database_url", "COMFYGATE_DATABASE_URL",
                "SQLAlchemy URL of the run table's database. Default: SQLite file in the data dir. "
                "Production: postgresql+psycopg://user@host/db."),
    SettingSpec("broker_url", "COMFYGATE_BROKER_URL",
                "Celery broker URL. Default: kombu's filesystem transport in the data dir (no server). "
                "Production: redis://host:6379/0 or amqp://user:pass@host//."),
    SettingSpec("storage_url", "COMFYGATE_STORAGE_URL",
                "Where outputs and uploaded inputs are stored: file:///abs/path or s3://bucket/prefix. "
                "Default: file://<data dir>/files."),
    SettingSpec("s3_endpoint_url", "COMFYGATE_S3_ENDPOINT_URL",
                "Endpoint of an S3-compatible server (MinIO, moto, ...). Empty: AWS's default endpoint."),
    SettingSpec("host", "COMFYGATE_HOST", "Address the API server binds. Default 127.0.0.1."),
    SettingSpec("port", "COMFYGATE_PORT", "Port of the API server and web UI. Default 8288.", int),
    SettingSpec("public_url", "COMFYGATE_PUBLIC_URL",
                "Base URL clients use to reach the server; used in printed links. Default http://host:port."),
    SettingSpec("pool", "COMFYGATE_POOL",
                "Worker pool name: runs go to Celery queue pool.<name>. Default 'default'."),
    SettingSpec("worker_concurrency", "COMFYGATE_WORKER_CONCURRENCY",
                "Runs one worker executes at once (threads). Default 2.", int),
    SettingSpec("embedded_worker", "COMFYGATE_EMBEDDED_WORKER",
                "Whether `comfygate serve` also starts a local worker. Default: true with the filesystem "
                "broker, false otherwise.", _bool),
    SettingSpec("engine", "COMFYGATE_ENGINE",
                "What runs a worker's prompts: builtin (comfygate's own executor, no ComfyUI needed) or comfyui (a "
                "real ComfyUI server on the same host, attached with COMFYGATE_COMFYUI_URL or started from "
                "COMFYGATE_COMFYUI_DIR). Default builtin.", _engine),
    SettingSpec("comfyui_url", "COMFYGATE_COMFYUI_URL",
                "Engine comfyui: attach to the ComfyUI server at this URL (http://127.0.0.1:8188). Empty: start "
                "one from COMFYGATE_COMFYUI_DIR."),
    SettingSpec("comfyui_dir", "COMFYGATE_COMFYUI_DIR",
                "Engine comfyui: the ComfyUI install (the folder holding main.py). Without a URL the worker "
                "starts it as a child process on 127.0.0.1 and a free port, restarts it when it dies and stops it "
                "with the worker; with a URL it is only used to delete the run's files from its input, output "
                "and temp folders.", Path),
    SettingSpec("comfyui_python", "COMFYGATE_COMFYUI_PYTHON",
                "Engine comfyui, supervised: the Python that runs ComfyUI's main.py (its virtual environment's). "
                "Default: <ComfyUI dir>/.venv/bin/python when it exists, else the worker's own Python.", Path),
    SettingSpec("comfyui_args", "COMFYGATE_COMFYUI_ARGS",
                "Engine comfyui, supervised: more command-line arguments for ComfyUI's main.py, split like a "
                "shell would (e.g. \"--highvram --preview-method auto\"). --listen and --port are set by the "
                "worker."),
    SettingSpec("comfyui_start_timeout_seconds", "COMFYGATE_COMFYUI_START_TIMEOUT_SECONDS",
                "Engine comfyui: how long ComfyUI may take to answer after it starts (custom nodes load at "
                "start) before the worker gives up. Default 300.", float),
    SettingSpec("node_pack_dirs", "COMFYGATE_NODE_PACK_DIRS",
                "Comma-separated folders laid out like ComfyUI's custom_nodes/ (each *.py file and each package "
                "folder in them is one node pack), loaded after the built-in nodes. A pack that fails to load "
                "is skipped and reported (GET /v1/node-packs); a folder that does not exist stops startup.",
                _paths),
    SettingSpec("node_cache_entries", "COMFYGATE_NODE_CACHE_ENTRIES",
                "Node results a worker process keeps between runs, so unchanged nodes (model loaders) are not run "
                "again. 0 turns the cache off. Default 64.", int),
    SettingSpec("models_dir", "COMFYGATE_MODELS_DIR",
                "Folder holding model files in ComfyUI's layout (checkpoints/, loras/, vae/, upscale_models/, "
                "diffusion_models/, text_encoders/, ...). Default <data dir>/models.", Path),
    SettingSpec("extra_model_paths", "COMFYGATE_EXTRA_MODEL_PATHS",
                "Optional ComfyUI-style extra_model_paths.yaml naming more model folders (e.g. an existing "
                "ComfyUI install's). Empty: none.", Path),
    SettingSpec("device", "COMFYGATE_DEVICE",
                "Where workers run models: auto (CUDA when present, else CPU), cpu, cuda or cuda:N. Default auto."),
    SettingSpec("dtype", "COMFYGATE_DTYPE",
                "Precision of diffusion models: auto (fp16 on CUDA, fp32 on CPU), fp16, bf16 or fp32. "
                "Default auto."),
    SettingSpec("model_memory_mb", "COMFYGATE_MODEL_MEMORY_MB",
                "Memory budget of a worker's model pool in MiB (VRAM on CUDA, RAM on CPU); idle models are "
                "evicted least recently used first to stay under it. 0: most of the device's memory. Default 0.",
                int),
    SettingSpec("preload", "COMFYGATE_PRELOAD",
                "Comma-separated model files a worker loads before taking runs, as folder/name under the models "
                "dir (checkpoints/sd15.safetensors). Same as `comfygate worker --preload`.", _names),
    SettingSpec("worker_health_port", "COMFYGATE_WORKER_HEALTH_PORT",
                "Port of a worker's readiness probe (GET /ready: 503 while preloading, 200 once it takes runs; "
                "GET /models: what is warm). 0: no probe. Default 0.", int),
    SettingSpec("clip_model", "COMFYGATE_CLIP_MODEL",
                "open_clip model name for the prompt-alignment check (e.g. ViT-B-32). Empty: check not run."),
    SettingSpec("clip_weights", "COMFYGATE_CLIP_WEIGHTS",
                "Local path of the open_clip weights file. Nothing is ever downloaded.", Path),
    SettingSpec("aesthetic_weights", "COMFYGATE_AESTHETIC_WEIGHTS",
                "Local path of an aesthetic-score head (LAION aesthetic-predictor layout, .pth or .safetensors) "
                "on the CLIP image embedding. Needs the CLIP model. Empty: the aesthetic check is not run.", Path),
    SettingSpec("nsfw_weights", "COMFYGATE_NSFW_WEIGHTS",
                "Local path of an NSFW head (same layout, one logit) on the CLIP image embedding. Needs the CLIP "
                "model. Empty: the nsfw check is not run.", Path),
    SettingSpec("sentinel_batch_size", "COMFYGATE_SENTINEL_BATCH_SIZE",
                "Images the quality gate embeds with CLIP in one batch on the worker's device. Default 16.", int),
    SettingSpec("webhook_secret", "COMFYGATE_WEBHOOK_SECRET",
                "Key of the HMAC-SHA256 signature sent with every webhook (X-Comfygate-Signature: sha256=<hex> "
                "of the body). Empty: webhooks are sent unsigned."),
    SettingSpec("webhook_timeout_seconds", "COMFYGATE_WEBHOOK_TIMEOUT_SECONDS",
                "How long one webhook delivery may take before it counts as failed and is retried. Default 5.",
                float),
    SettingSpec("webhook_max_attempts", "COMFYGATE_WEBHOOK_MAX_ATTEMPTS",
                "Deliveries of one webhook tried (with backoff 1, 2, 4, ... s) before it is recorded as failed. "
                "Default 6.", int),
    SettingSpec("max_upload_bytes", "COMFYGATE_MAX_UPLOAD_BYTES",
                "Largest request body accepted (workflow uploads, run inputs with images). Default 20 MiB.",
                int),
    SettingSpec("max_image_pixels", "COMFYGATE_MAX_IMAGE_PIXELS",
                "Largest uploaded image, in pixels; Pillow's decompression-bomb guard. Default 64 Mpx.", int),
    SettingSpec("heartbeat_seconds", "COMFYGATE_HEARTBEAT_SECONDS",
                "How often a worker marks its running run alive. Default 2.", float),
    SettingSpec("capabilities_seconds", "COMFYGATE_CAPABILITIES_SECONDS",
                "How often a worker asks its engine for its node schemas and model files, and reports them for "
                "its pool when they changed (uploads for the pool are checked against them). Default 60.",
                float),
    SettingSpec("stale_after_seconds", "COMFYGATE_STALE_AFTER_SECONDS",
                "A running run whose heartbeat is older than this is taken as lost. Default 15.", float),
    SettingSpec("queued_timeout_seconds", "COMFYGATE_QUEUED_TIMEOUT_SECONDS",
                "A run queued this long without a worker claiming it is dispatched again (a lost broker "
                "message). Default 300.", float),
    SettingSpec("max_attempts", "COMFYGATE_MAX_ATTEMPTS",
                "How many times a run is tried before the watchdog fails it. Default 3.", int),
    SettingSpec("watchdog_seconds", "COMFYGATE_WATCHDOG_SECONDS",
                "How often the watchdog looks for lost runs. Default 5.", float),
    SettingSpec("broker_lost_seconds", "COMFYGATE_BROKER_LOST_SECONDS",
                "How long a worker may go without a working broker connection; after that its /ready answers "
                "503 and it exits so its supervisor starts a fresh one. Default 30.", float),
    SettingSpec("rate_limit_requests_per_second", "COMFYGATE_RATE_LIMIT_REQUESTS_PER_SECOND",
                "Requests per second one API key may make (a token bucket holding twice this for bursts); over "
                "it: 429 with Retry-After. A logged-in console user gets the same per user. 0: no limit. Per-key "
                "overrides: `comfygate keys create --limit`. Default 50.", _limit(float)),
    SettingSpec("rate_limit_runs_per_minute", "COMFYGATE_RATE_LIMIT_RUNS_PER_MINUTE",
                "Runs one API key may start per minute (a token bucket of this size). 0: no limit. Default 120.",
                _limit(int)),
    SettingSpec("rate_limit_concurrent_runs", "COMFYGATE_RATE_LIMIT_CONCURRENT_RUNS",
                "Runs of one API key that may be queued or running at once. 0: no limit. Default 32.", _limit(int)),
    SettingSpec("rate_limit_runs_per_day", "COMFYGATE_RATE_LIMIT_RUNS_PER_DAY",
                "Runs one API key may start in 24 hours. 0: no limit. Default 0.", _limit(int)),
    SettingSpec("limits_redis_url", "COMFYGATE_LIMITS_REDIS_URL",
                "Redis URL where API processes share rate-limit buckets and login throttles. Default: the "
                "broker's URL when the broker is Redis; else each process keeps its own (the embedded default "
                "runs one API process). While Redis is unreachable each process limits on its own."),
    SettingSpec("limits_redis_prefix", "COMFYGATE_LIMITS_REDIS_PREFIX",
                "Prefix of the rate-limit keys in Redis. Default: comfygate:limits:<hash of the database URL>:, "
                "so installations sharing a Redis keep apart; set the same value on every API process of one "
                "installation if they name the database by different URLs."),
    SettingSpec("webhook_allow", "COMFYGATE_WEBHOOK_ALLOW",
                "Comma-separated host names and networks (receiver.internal, 10.1.2.0/24, ::1) that webhooks may "
                "reach although they are internal. Every other loopback, private, link-local, multicast, "
                "reserved or unspecified target is refused. Default: none.", _names),
    SettingSpec("max_run_pixels", "COMFYGATE_MAX_RUN_PIXELS",
                "Largest image (width x height) a run may ask a node for; over it the run or upload is refused "
                "with 422 naming the input. 0: no limit. Default 4194304 (2048 x 2048).", _limit(int)),
    SettingSpec("max_batch_size", "COMFYGATE_MAX_BATCH_SIZE",
                "Largest batch size (batch_size, amount) a run may ask a node for. 0: no limit. Default 16.",
                _limit(int)),
    SettingSpec("max_frames", "COMFYGATE_MAX_FRAMES",
                "Most video frames (length, frames, num_frames, video_frames, frame_count) a run may ask a node "
                "for. 0: no limit. Default 300.", _limit(int)),
    SettingSpec("max_steps", "COMFYGATE_MAX_STEPS",
                "Most sampler steps a run may ask a node for. 0: no limit. Default 150.", _limit(int)),
    SettingSpec("api_key", "COMFYGATE_API_KEY",
                "API key the command-line client (`comfygate workflows push`, `comfygate run`) sends."),
    SettingSpec("secure_cookies", "COMFYGATE_SECURE_COOKIES",
                "Mark the admin session cookie Secure (set true behind HTTPS). Default false.", _bool),
)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""
    broker_url: str = ""
    storage_url: str = ""
    s3_endpoint_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8288
    public_url: str = ""
    pool: str = "default"
    worker_concurrency: int = 2
    embedded_worker: bool | None = None
    engine: str = "builtin"
    comfyui_url: str = ""
    comfyui_dir: Path | None = None
    comfyui_python: Path | None = None
    comfyui_args: str = ""
    comfyui_start_timeout_seconds: float = 300.0
    node_pack_dirs: tuple[Path, ...] = field(default_factory=tuple)
    node_cache_entries: int = 64
    models_dir: Path | None = None
    extra_model_paths: Path | None = None
    device: str = "auto"
    dtype: str = "auto"
    model_memory_mb: int = 0
    preload: tuple[str, ...] = field(default_factory=tuple)
    worker_health_port: int = 0
    clip_model: str = ""
    clip_weights: Path | None = None
    aesthetic_weights: Path | None = None
    nsfw_weights: Path | None = None
    sentinel_batch_size: int = 16
    webhook_secret: str = ""
    webhook_timeout_seconds: float = 5.0
    webhook_max_attempts: int = 6
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 64_000_000
    heartbeat_seconds: float = 2.0
    capabilities_seconds: float = 60.0
    stale_after_seconds: float = 15.0
    queued_timeout_seconds: float = 300.0
    max_attempts: int = 3
    watchdog_seconds: float = 5.0
    broker_lost_seconds: float = 30.0
    rate_limit_requests_per_second: float = 50.0
    rate_limit_runs_per_minute: int = 120
    rate_limit_concurrent_runs: int = 32
    rate_limit_runs_per_day: int = 0
    limits_redis_url: str = ""
    limits_redis_prefix: str = ""
    webhook_allow: tuple[str, ...] = field(default_factory=tuple)
    max_run_pixels: int = 4_194_304
    max_batch_size: int = 16
    max_frames: int = 300
    max_steps: int = 150
    api_key: str = ""
    secure_cookies: bool = False

    def __post_init__(self) -> None:
        # Derived defaults depend on data_dir, so they are filled here rather than as field defaults.
        data_dir = Path(self.data_dir).absolute()
        object.__setattr__(self, "data_dir", data_dir)
        # Absolute, like data_dir: the server and its workers may start from other working directories.
        object.__setattr__(self, "node_pack_dirs", tuple(Path(p).absolute() for p in self.node_pack_dirs))
        object.__setattr__(self, "models_dir", Path(self.models_dir or data_dir / "models").absolute())
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{data_dir / 'comfygate.db'}")
        if not self.broker_url:
            object.__setattr__(self, "broker_url", "filesystem://")
        if not self.storage_url:
            object.__setattr__(self, "storage_url", (data_dir / "files").as_uri())
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://{self.host}:{self.port}")
        if not self.limits_redis_url and self.uses_redis_broker:
            object.__setattr__(self, "limits_redis_url", self.broker_url)
        if self.embedded_worker is None:
            object.__setattr__(self, "embedded_worker", self.uses_filesystem_broker)

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.broker_url.startswith("filesystem:")

    @property
    def uses_redis_broker(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://"))

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def queue_name(self) -> str:
        return f"pool.{self.pool}"  # the same as platform.dispatch.pool_queue (settings import nothing)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in SETTINGS:
            raw = environ.get(spec.env)
            if raw is None or raw == "":
                continue
            try:
                values[spec.name] = spec.parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{spec.env}={raw!r}: {exc}") from exc
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)
