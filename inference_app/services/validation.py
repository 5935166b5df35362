"""Validation of a model registration: the one contract the API and the Kafka listener share."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..errors import InvalidInput
from ..units import parse_memory

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME_LIMITS = {"user_id": 64, "model_name": 128, "version": 64}
# registry host[:port]/path[:tag][@digest], lower-case path components as Docker requires
IMAGE_REF = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_ENTRIES = 100
MAX_ENV_VALUE = 4096
MAX_METADATA_BYTES = 16 * 1024
MAX_IDLE_TIMEOUT = 7 * 24 * 3600
MAX_JSON_DEPTH = 16  # of metadata and of a whole Kafka event; PostgreSQL and the dashboard read them
NANO = 1_000_000_000
MIN_CPUS_FLOOR = 0.01  # Docker refuses a smaller CPU share; MIN_CPUS may only raise it

# Env keys that change how a runtime in the container loads or runs code: with them, a
# registration could run its own code inside an allowlisted image (LD_PRELOAD, NODE_OPTIONS,
# PYTHONWARNINGS with BROWSER, BASH_ENV ...). Compared in upper case. README "Security" lists them.
RUNTIME_HOOK_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON", "MALLOC_", "BASH_FUNC_", "GIT_", "LUA_")
RUNTIME_HOOK_ENV_KEYS = frozenset(
    {
        # shells and the programs other programs start
        "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS", "ZDOTDIR",
        "BROWSER", "EDITOR", "VISUAL", "PAGER",
        # Node, Perl, Ruby, Java, R, PHP, Tcl
        "NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE",
        "PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB",
        "RUBYOPT", "RUBYLIB",
        "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "JAVA_OPTS", "CLASSPATH",
        "R_PROFILE", "R_PROFILE_USER", "R_ENVIRON", "R_ENVIRON_USER", "R_LIBS", "R_LIBS_USER",
        "PHPRC", "PHP_INI_SCAN_DIR", "TCLLIBPATH",
        # the C library and OpenSSL loading modules
        "GCONV_PATH", "GLIBC_TUNABLES", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF",
        "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
    }
)  # fmt: skip
# PYTHON* keys that only tune output or hashing, allowed despite the PYTHON prefix.
HARMLESS_PYTHON_ENV_KEYS = frozenset(
    {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8"}
)
MAX_TARGET_CONCURRENCY = 10_000

REQUIRED = ("user_id", "model_name", "image")
OPTIONAL = (
    "version",
    "port",
    "health_path",
    "predict_path",
    "env",
    "memory",
    "cpus",
    "idle_timeout_seconds",
    "min_replicas",
    "max_replicas",
    "target_concurrency",
    "metadata",
)
FIELDS = REQUIRED + OPTIONAL
_METADATA_JSON = json.JSONEncoder(default=str).encode  # (one encoder: json.dumps(default=) builds one a call)
# At most this many characters of json.dumps for each character of the JSON text a value was
# decoded from: 12 for an astral character (two \u escapes); 18 from "9e15" (4.5 a character);
# ", " and ": " for "," and ":". A metadata from a text this many times shorter than the
# limit needs no measuring.
JSON_EXPANSION = 12


@dataclass
class Registration:
    """A validated registration, ready for the registry to apply."""

    user_id: str
    model_name: str
    image: str
    version: str = "1"
    port: int = 8080
    health_path: str = "/health"
    predict_path: str = "/predict"
    env: dict[str, str] = field(default_factory=dict)
    memory_bytes: int | None = None
    cpus: float | None = None
    idle_timeout_seconds: int | None = None
    min_replicas: int = 0
    max_replicas: int = 1
    target_concurrency: int = 4
    metadata: dict[str, Any] = field(default_factory=dict)


def safe_name(name: str, value: Any, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{name} is required", field=name)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput(f"{name} must be a string", field=name)
    value = str(value)
    limit = NAME_LIMITS[name]
    if len(value) > limit:
        raise InvalidInput(f"{name} must be at most {limit} characters, got {len(value)}", field=name)
    if not SAFE_NAME.fullmatch(value):
        raise InvalidInput(
            f"{name} may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit",
            field=name,
        )
    return value


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number", field=name)
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, got {value}", field=name)
    return value


def _path(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string starting with '/'", field=name)
    if len(value) > 512 or not PATH.fullmatch(value) or "/../" in value + "/" or "//" in value:
        raise InvalidInput(
            f"{name} must be a URL path starting with '/' without spaces or '..', got {value!r}"[:300], field=name
        )
    return value


def runtime_hook_env(key: str) -> bool:
    """Whether an env key changes how a runtime in the container loads code (refused)."""
    name = key.upper()
    if name in HARMLESS_PYTHON_ENV_KEYS:
        return False
    return name in RUNTIME_HOOK_ENV_KEYS or name.startswith(RUNTIME_HOOK_ENV_PREFIXES)


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidInput("env must be an object of string keys to string values", field="env")
    if len(value) > MAX_ENV_ENTRIES:
        raise InvalidInput(f"env may hold at most {MAX_ENV_ENTRIES} entries", field="env")
    result = {}
    for key, val in value.items():
        if not isinstance(key, str) or len(key) > 128 or not ENV_KEY.fullmatch(key):
            raise InvalidInput(
                f"env key {str(key)[:64]!r} must be a letter or '_' followed by letters, digits or '_'", field="env"
            )
        if runtime_hook_env(key):
            raise InvalidInput(
                f"env key {key} is not allowed: it changes how a runtime in the container loads code", field="env"
            )
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise InvalidInput(f"env value of {key} must be a string", field="env")
        val = str(val)
        if len(val) > MAX_ENV_VALUE or "\x00" in val or not _encodable(val):
            raise InvalidInput(
                f"env value of {key} must be at most {MAX_ENV_VALUE} characters of text without NUL", field="env"
            )
        result[key] = val
    return result


def json_safety_problem(value: Any, depth: int = 1, where: str = "") -> str | None:
    """Why PostgreSQL's text and json types could not hold this decoded JSON, or None.

    NUL characters, lone UTF-16 surrogates, NaN and infinities are refused there; nesting is
    bounded by MAX_JSON_DEPTH.
    """
    if depth > MAX_JSON_DEPTH:
        return f"{where or 'the value'} is nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        return _text_problem(value, where)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or 'a number'} is NaN or infinite, which JSON and PostgreSQL do not allow"
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{_label(key)}" if where else _label(key)
            problem = _text_problem(key, f"a key in {where or 'the object'}") or json_safety_problem(
                item, depth + 1, inner
            )
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = json_safety_problem(item, depth + 1, f"{where}[{index}]")
            if problem:
                return problem
    return None


def plain_json_text(text: str) -> bool:
    """Whether a JSON text, decoded with NaN and infinities refused, surely passes json_safety_problem,
    even with its values kept one level deeper (unknown fields of an event go into metadata).

    In valid JSON text a NUL character or a lone surrogate can only be written as a \\u escape,
    and a value nested too deep needs more brackets than this allows. A text that is not plain
    is walked with json_safety_problem; most events are plain, and this test costs far less.
    """
    return "\\u" not in text and text.count("{") + text.count("[") < MAX_JSON_DEPTH - 1


def _text_problem(text: Any, where: str) -> str | None:
    if not isinstance(text, str):
        return None
    if "\x00" in text:
        return f"{where or 'a string'} holds a NUL character (U+0000), which PostgreSQL text cannot store"
    if not _encodable(text):
        return f"{where or 'a string'} holds a lone UTF-16 surrogate (not valid Unicode)"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _label(key: Any) -> str:
    """A key as it may appear in an error message (printable, short)."""
    text = str(key)[:40]
    return text if text.isprintable() and _encodable(text) else repr(text.encode("utf-8", "backslashreplace"))[2:-1]


def validate_registration(
    data: Any, settings: Settings, keep_unknown: bool = False, json_text: str | None = None
) -> Registration:
    """Check a registration body; raise InvalidInput naming the first field at fault.

    keep_unknown: the Kafka contract keeps unknown fields in metadata; the API refuses them.
    json_text: the JSON text the body was decoded from (NaN and infinities refused), if any: when
    it is plain (plain_json_text) and short (JSON_EXPANSION), the metadata checks cannot fail and are skipped.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput("the body must be a JSON object")
    unknown = [k for k in data if k not in FIELDS]
    if unknown and not keep_unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; allowed: {', '.join(FIELDS)}", field=str(unknown[0])[:64])
    reg = Registration(
        user_id=safe_name("user_id", data.get("user_id")),
        model_name=safe_name("model_name", data.get("model_name")),
        image=_image(data.get("image"), settings.allowed_image_prefixes),
    )
    if data.get("version") is not None:
        reg.version = safe_name("version", data["version"])
    if data.get("port") is not None:
        reg.port = _int("port", data["port"], 1, 65535)
    if data.get("health_path") is not None:
        reg.health_path = _path("health_path", data["health_path"])
    if data.get("predict_path") is not None:
        reg.predict_path = _path("predict_path", data["predict_path"])
    if data.get("env") is not None:
        reg.env = _env(data["env"])
    if data.get("memory") is not None:
        reg.memory_bytes = _memory(data["memory"], settings)
    if data.get("cpus") is not None:
        reg.cpus = _cpus(data["cpus"], settings)
    if data.get("idle_timeout_seconds") is not None:
        reg.idle_timeout_seconds = _int("idle_timeout_seconds", data["idle_timeout_seconds"], 1, MAX_IDLE_TIMEOUT)
    _scaling(reg, data, settings.max_replicas_per_model)
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object", field="metadata")
    reg.metadata = dict(metadata or {})
    if keep_unknown:
        for key in unknown:
            reg.metadata.setdefault(str(key)[:128], data[key])
    # depth 2: metadata sits one level inside the registration
    plain = json_text is not None and plain_json_text(json_text)
    problem = None if plain else json_safety_problem(reg.metadata, depth=2, where="metadata")
    if problem:
        raise InvalidInput(problem, field="metadata")
    short = json_text is not None and len(json_text) * JSON_EXPANSION <= MAX_METADATA_BYTES
    if not short and len(_METADATA_JSON(reg.metadata)) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON", field="metadata")
    return reg


def image_allowed(image: str, allowlist: Iterable[str] | str) -> bool:
    """Whether IMAGE_ALLOWLIST admits this image; an entry matches on a path boundary.

    `registry.local/models` admits `registry.local/models`, `registry.local/models/x`,
    `registry.local/models:tag` and `...@sha256:...`, never `registry.local/models-evil/x` nor
    `registry.local:5000/...`; an entry ending in '/' admits what lies under it. An empty list
    admits every image.
    """
    entries = [e.strip() for e in (allowlist.split(",") if isinstance(allowlist, str) else allowlist)]
    entries = [e for e in entries if e]
    if not entries:
        return True
    return any(_under(image, entry) for entry in entries)


def _under(image: str, entry: str) -> bool:
    if entry.endswith("/"):
        return image.startswith(entry)
    if image == entry:
        return True
    if not image.startswith(entry):
        return False
    rest = image[len(entry) :]
    if rest[0] == "/" or rest[0] == "@":
        return True
    # ':' starts a tag after a repository, or a port after a registry host (followed by a path)
    return rest[0] == ":" and "/" not in rest


def nano_cpus(cpus: float) -> int:
    """Docker's NanoCpus for a CPU share: never 0, which Docker reads as "no limit"."""
    return max(int(round(cpus * NANO)), int(MIN_CPUS_FLOOR * NANO))


def _scaling(reg: Registration, data: Mapping, max_per_model: int) -> None:
    """min_replicas <= max_replicas <= MAX_REPLICAS_PER_MODEL, and a target of requests in flight per replica."""
    if data.get("max_replicas") is not None:
        reg.max_replicas = _int("max_replicas", data["max_replicas"], 1, max_per_model)
    if data.get("min_replicas") is not None:
        reg.min_replicas = _int("min_replicas", data["min_replicas"], 0, max_per_model)
    if reg.min_replicas > reg.max_replicas:
        raise InvalidInput(
            f"min_replicas ({reg.min_replicas}) must not exceed max_replicas ({reg.max_replicas})", field="min_replicas"
        )
    if data.get("target_concurrency") is not None:
        reg.target_concurrency = _int("target_concurrency", data["target_concurrency"], 1, MAX_TARGET_CONCURRENCY)


def _image(value: Any, allowed_prefixes: tuple[str, ...]) -> str:
    if value is None or value == "":
        raise InvalidInput("image is required", field="image")
    if not isinstance(value, str):
        raise InvalidInput("image must be a string", field="image")
    if len(value) > 512 or not IMAGE_REF.fullmatch(value):
        raise InvalidInput(
            f"image {value[:100]!r} is not a valid image reference (like registry/name:tag)", field="image"
        )
    if not image_allowed(value, allowed_prefixes):
        raise InvalidInput(
            f"image {value!r} is not allowed here (IMAGE_ALLOWLIST permits: {', '.join(allowed_prefixes)})",
            field="image",
        )
    return value


def _memory(value: Any, settings: Settings) -> int:
    try:
        amount = _memory_size(value) if isinstance(value, str) else parse_memory("memory", value)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="memory") from None
    if amount > _max_memory(settings.max_memory):
        raise InvalidInput(f"memory must be at most {settings.max_memory} on this service", field="memory")
    return amount


@functools.lru_cache(maxsize=8)
def _max_memory(setting: str) -> int:
    return parse_memory("MAX_MEMORY", setting)


@functools.lru_cache(maxsize=256)
def _memory_size(value: str) -> int:
    # (cached: registrations name a few sizes, "512m", "1g", many times; a refusal is not cached)
    return parse_memory("memory", value)


def _cpus(value: Any, settings: Settings) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput("cpus must be a number of CPUs, like 0.5 or 2", field="cpus")
    low, high = settings.min_cpus, settings.max_cpus
    # (an int beyond float range is simply too large; NaN fails every comparison)
    if not (isinstance(value, float) and math.isfinite(value) or isinstance(value, int)) or not low <= value <= high:
        raise InvalidInput(
            f"cpus must be between {low} and {high} CPUs on this service, got {value!r:.40}", field="cpus"
        )
    return float(value)
