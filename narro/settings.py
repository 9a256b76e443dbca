"""narro's settings: one typed, frozen object, built once at the edge (CLI, dashboard) and passed down.

Every setting has a default, a docstring and exactly one environment name, NARRO_<GROUP>_<FIELD>
(`qa.max_takes` is NARRO_QA_MAX_TAKES), except two older names kept as they were:
`catalogue.url` is NARRO_CATALOGUE and `dashboard.retry_deployment` is NARRO_RETRY_DEPLOYMENT.
A project file may set them too, one table per group:

    [qa]
    max_takes = 4
    [edge]
    concurrency = 4

The file is the one `--config` or NARRO_CONFIG names, else `./narro.toml`, else the
`[tool.narro.<group>]` tables of `./pyproject.toml`. Only one file is read.

Precedence, highest first: command-line flags (`--catalogue`, `--endpoint-url`) > environment >
project file > default. An empty environment variable counts as unset. Each value's source is
kept (`Settings.source`), and `narro settings` prints them all, secrets masked.

A bad value (`NARRO_QA_MAX_TAKES=abc`, a negative limit, an unknown key in the file or an unknown
NARRO_<GROUP>_* variable) raises SettingsError with one line naming the variable, FILE: KEY or
flag, and what it accepts; the CLI exits 2 on it before anything renders.

This is the only module of narro that reads os.environ; everything else takes its values as
parameters. Engines receive the whole object in `load(voice, settings)`; flows and tasks take it
as a parameter (it is a pydantic model, so Prefect serialises it; secrets are left out).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import JsonDict

from narro.errors import SettingsError

CONFIG_ENV = "NARRO_CONFIG"
PROJECT_FILE = "narro.toml"
DEFAULT, MASK = "default", "********"


class Group(BaseModel):
    """A table of settings; unknown keys are errors, NaN and infinities are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)


def _env(name: str, **extra: str) -> JsonDict:
    """json_schema_extra of a field whose environment name is not the derived one."""
    return {"env": name, **extra}


class QaSettings(Group):
    """Thresholds of the quality gate (narro.qa)."""

    max_wer: float = Field(0.30, ge=0)
    """Word error rate of the ASR transcript against the script, after normalisation."""
    max_gap_words: int = Field(4, ge=0)
    """Longest run of script words missing from, or extra words inserted into, the transcript."""
    min_tail_words: int = Field(2, ge=0, le=5)
    """Of the script's last 5 words, at least this many must be heard at the end (not truncated)."""
    min_wpm: float = Field(100.0, ge=0)
    """Slowest plausible speech rate, words per minute over the spoken span."""
    max_wpm: float = Field(240.0, gt=0)
    """Fastest plausible speech rate."""
    min_rate_words: int = Field(15, ge=0)
    """Scripts shorter than this are not judged by speech rate (a few words give no stable rate)."""
    max_edge_silence_s: float = Field(0.75, ge=0)
    """Longest silence before the first or after the last word."""
    max_pause_s: float = Field(2.0, ge=0)
    """Longest silence between words."""
    silence_below_peak_db: float = Field(40.0, gt=0)
    """A 10 ms frame this far below the loudest frame is silence."""
    loudness_tolerance_lu: float = Field(1.0, ge=0)
    """Integrated loudness may differ from the post-processing target by this much."""
    max_clipped_runs: int = Field(3, ge=0)
    """Runs of 3+ samples stuck at the engine output's maximum (digital clipping)."""
    max_noise_floor_db: float = Field(-60.0, le=0)
    """Level of the quietest 5% of 50 ms frames (ACX's noise floor reference), dBFS."""
    duration_tolerance_s: float = Field(0.15, ge=0)
    """The decoded file may differ from the finished take by this much (or 1%, if larger)."""
    min_active_ratio: float = Field(0.4, ge=0, le=1)
    """Share of the take above -50 dBFS; below it the take is (nearly) silent."""
    asr: bool = True
    """Run the ASR round trip (intelligibility and truncation checks)."""
    max_takes: int = Field(3, ge=1)
    """Takes per clip: the first, then re-makes with a varied voice, then the tier's fallback engine."""

    def as_dict(self) -> dict[str, object]:
        """The thresholds as recorded in each sidecar."""
        return self.model_dump()


class AsrSettings(Group):
    """The speech recogniser of the QA round trip (narro.asr)."""

    model: str | None = Field(None, min_length=1,
                              json_schema_extra={"accepts": "the folder of a CTranslate2 Whisper model"})
    """Folder of a CTranslate2 Whisper model (e.g. a converted small.en); unset: the bundled tiny.en."""
    threads: int = Field(1, ge=1)
    """CPU threads per recognition call."""
    parallel: int = Field(2, ge=1)
    """Recognition calls that run at once in a worker process (the rest queue)."""


def _url(value: str | None, schemes: tuple[str, ...], query: bool) -> str | None:
    if value is not None and (not value.startswith(schemes) or (query and "?" not in value)):
        raise ValueError("bad URL")
    return value


class EdgeSettings(Group):
    """The edge-tts service (narro.engines.edge) and the cap on requests to it."""

    wss_url: str | None = Field(None, json_schema_extra={"accepts": "a ws:// or wss:// URL containing '?'"})
    """WebSocket endpoint (query parameters are appended after its '?'); unset: edge-tts's own."""
    voices_url: str | None = Field(None, json_schema_extra={"accepts": "an http:// or https:// URL containing '?'"})
    """Voice list endpoint; unset: edge-tts's own."""
    retries: int = Field(5, ge=0)
    """Retries per request after the first try."""
    backoff_s: float = Field(0.5, ge=0)
    """First backoff before a retry; it doubles per retry, with full jitter."""
    backoff_max_s: float = Field(8.0, ge=0)
    """Longest backoff (and longest wait a Retry-After header can ask for)."""
    timeout_s: float = Field(20.0, gt=0)
    """Socket connect/read timeout; a request's deadline is this plus twice the speech it should return."""
    unreachable_hold_s: float = Field(60.0, ge=0)
    """Once the service is found unreachable, later clips in the process go straight to the fallback this long."""
    concurrency: int = Field(8, ge=1)
    """Requests to the service at once, across every worker (a Prefect global concurrency limit)."""

    @field_validator("wss_url")
    @classmethod
    def _wss(cls, value: str | None) -> str | None:
        return _url(value, ("ws://", "wss://"), query=True)

    @field_validator("voices_url")
    @classmethod
    def _voices(cls, value: str | None) -> str | None:
        return _url(value, ("http://", "https://"), query=True)


class S3Settings(Group):
    """S3 stores (narro.s3store). Credentials and region come from boto3's own chain, never from here."""

    endpoint_url: str | None = Field(None, json_schema_extra={"accepts": "an http:// or https:// URL"})
    """Endpoint of an S3-compatible server; unset: boto3's own choice (AWS_ENDPOINT_URL, the profile, else AWS)."""

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return _url(value, ("http://", "https://"), query=False)


def _default_catalogue() -> str:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "narro"
    return f"sqlite:///{base / 'catalogue.db'}"


class CatalogueSettings(Group):
    """The catalogue database (narro.catalogue)."""

    url: str = Field(default_factory=_default_catalogue, min_length=1,
                     json_schema_extra=_env("NARRO_CATALOGUE", accepts="a SQLAlchemy URL"))
    """SQLAlchemy URL of the catalogue; default: a SQLite file in $XDG_DATA_HOME/narro (~/.local/share/narro)."""


MIN_TOKEN_CHARS = 12


class DashboardSettings(Group):
    """The web dashboard (narro.dashboard) and how it starts retries (flows/retry.py)."""

    token: SecretStr | None = Field(None, min_length=MIN_TOKEN_CHARS, exclude=True, json_schema_extra={
        "accepts": f"a secret of at least {MIN_TOKEN_CHARS} random characters (e.g. `openssl rand -hex 16`)"})
    """Sign-in token; required to listen beyond loopback. Secret: masked in `narro settings`, never sent to flows."""
    retry_deployment: str | None = Field(None, pattern=r"^[^/]+/[^/]+$",
                                         json_schema_extra=_env("NARRO_RETRY_DEPLOYMENT", accepts="FLOW/DEPLOYMENT"))
    """Deployment that runs retries (e.g. render-course/narro; needs PREFECT_API_URL); unset: in the dashboard."""


def _whole_number(value: object) -> object:
    """0x6E as well as 110."""
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return value
    return value


class WatermarkSettings(Group):
    """The watermark embedded in every clip (narro.watermark)."""

    org_id: Annotated[int, BeforeValidator(_whole_number)] = Field(0x6E, ge=0, le=255)
    """Organisation byte of the watermark payload (0x6E or 110 alike)."""


class CodecLmSettings(Group):
    """The quality tier's codec language model."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where it runs: auto picks cuda when a GPU is visible, else cpu."""


class ConsentSettings(Group):
    """Cloned voices (narro.consent): what no consent record can override."""

    public_figures: Path | None = Field(default=None, json_schema_extra={"accepts": "a text file of names, one a line"})
    """Extra names of public figures, one a line (aliases joined by ' | ', # comments), refused as clone speakers
    on top of the list narro ships; it only adds names."""


class ClusterSettings(Group):
    """Cluster mode (narro.cluster): where the flow sends clips; `narro cluster env` sets these."""

    mode: Literal["embedded", "cluster"] = "embedded"
    """embedded: clips render in this process on threads; cluster: on the Dask workers at `scheduler`."""
    scheduler: str | None = Field(None, pattern=r"^(tcp|tls|ucx)://.+:\d+$",
                                  json_schema_extra={"accepts": "a Dask scheduler address, tcp://HOST:PORT"})
    """Dask scheduler address; required in cluster mode."""
    lease_ttl_s: float = Field(45.0, ge=3, le=3600)
    """A run holds each clip it renders under a lease it renews every third of this; a killed run's clips are
    free again (shown as interrupted) after at most this long."""


class StoreSettings(Group):
    """Where clips are published when a command's --store is not given."""

    url: str = Field("narro-out", min_length=1, json_schema_extra={"accepts": "a folder or s3://BUCKET/PREFIX"})
    """Default store: a local folder or s3://BUCKET/PREFIX."""


def _default_log_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "narro" / "logs"


class LogSettings(Group):
    """The full log of each render (narro.runlog); the terminal shows only the summary."""

    dir: Path = Field(default_factory=_default_log_dir, json_schema_extra={"accepts": "a folder path"})
    """Folder of the per-run logs, `{course}-{run_id}.log`; default: $XDG_STATE_HOME/narro/logs (~/.local/state/narro/logs)."""


class Settings(BaseModel):
    """Every narro setting, grouped; build it with `Settings.load()` (the CLI and dashboard do, once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    qa: QaSettings = QaSettings()
    asr: AsrSettings = AsrSettings()
    edge: EdgeSettings = EdgeSettings()
    s3: S3Settings = S3Settings()
    catalogue: CatalogueSettings = Field(default_factory=CatalogueSettings)
    dashboard: DashboardSettings = DashboardSettings()
    watermark: WatermarkSettings = WatermarkSettings()
    codec_lm: CodecLmSettings = CodecLmSettings()
    consent: ConsentSettings = ConsentSettings()
    log: LogSettings = Field(default_factory=LogSettings)
    cluster: ClusterSettings = ClusterSettings()
    store: StoreSettings = StoreSettings()
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _file: str | None = PrivateAttr(default=None)

    @classmethod
    def load(cls, config: str | Path | None = None, environ: Mapping[str, str] | None = None,
             cwd: Path | None = None) -> Settings:
        """Defaults, overlaid by the project file, overlaid by the environment. Raises SettingsError."""
        environ = os.environ if environ is None else environ
        raw: dict[str, dict[str, tuple[object, str]]] = {group: {} for group in GROUPS}
        found = _project_file(config, environ, cwd or Path.cwd())
        if found is not None:
            path, prefix, tables = found
            for group, field, value in _file_entries(path, prefix, tables):
                raw[group][field] = (value, f"file:{path}")
        _refuse_unknown_environment(environ)
        for group, model in GROUPS.items():
            for field in model.model_fields:
                name = env_name(group, field)
                if environ.get(name):
                    raw[group][field] = (environ[name], f"environment:{name}")
        settings = cls(**{group: _validated(group, values) for group, values in raw.items()})
        settings._sources = {f"{group}.{field}": source for group, values in raw.items()
                             for field, (_, source) in values.items()}
        settings._file = str(found[0]) if found else None
        return settings

    def with_flag(self, name: str, value: object, flag: str) -> Settings:
        """A copy with `name` (dotted) set by a command-line flag; the same when the flag was not given."""
        if value is None:
            return self
        group, field = name.split(".")
        current = getattr(self, group)
        raw = {f: (getattr(current, f), self.source(f"{group}.{f}")) for f in type(current).model_fields}
        raw[field] = (value, f"flag:{flag}")
        updated = self.model_copy(update={group: _validated(group, raw)})
        updated._sources = {**self._sources, name: f"flag:{flag}"}
        updated._file = self._file
        return updated

    def source(self, name: str) -> str:
        """Where a dotted setting's value came from: default, file:PATH, environment:NAME or flag:--NAME."""
        return self._sources.get(name, DEFAULT)

    @property
    def file(self) -> str | None:
        """The project file read, if any."""
        return self._file

    def rows(self) -> list[dict[str, object]]:
        """Every setting: dotted name, value (secrets masked), source and environment name."""
        rows: list[dict[str, object]] = []
        for group, model in GROUPS.items():
            for field in model.model_fields:
                rows.append({"name": f"{group}.{field}", "value": _shown(getattr(getattr(self, group), field)),
                             "source": self.source(f"{group}.{field}"), "env": env_name(group, field)})
        return rows


GROUPS: dict[str, type[Group]] = {name: info.annotation  # type: ignore[misc]
                                  for name, info in Settings.model_fields.items()}


def env_name(group: str, field: str) -> str:
    """The one environment variable of a setting."""
    extra = GROUPS[group].model_fields[field].json_schema_extra
    if isinstance(extra, dict) and "env" in extra:
        return str(extra["env"])
    return f"NARRO_{group.upper()}_{field.upper()}"


def _shown(value: object) -> object:
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):  # a password in a database URL
        return re.sub(r"(://[^/:@]+:)[^/@]+@", rf"\1{MASK}@", value)
    return value


def _validated(group: str, raw: Mapping[str, tuple[object, str]]) -> Group:
    model = GROUPS[group]
    try:
        return model.model_validate({field: value for field, (value, _) in raw.items()})
    except ValidationError as error:
        field = str(error.errors()[0]["loc"][0])
        value, source = raw[field]
        raise SettingsError(f"{_where(group, field, value, source)}: expected {accepts(group, field)}") from None


def _where(group: str, field: str, value: object, source: str) -> str:
    """The setting as the user wrote it: NAME=value, FILE: group.field = value, or --flag value."""
    kind, _, origin = source.partition(":")
    secret = GROUPS[group].model_fields[field].annotation in (SecretStr, SecretStr | None)
    shown = "" if secret else repr(value)
    if kind == "environment":
        return f"{origin}={shown}" if shown else origin
    if kind == "flag":
        return f"{origin} {shown}".strip()
    return f"{origin}: {group}.{field}" + (f" = {shown}" if shown else "")


def accepts(group: str, field: str) -> str:
    """What a setting accepts, in words."""
    info = GROUPS[group].model_fields[field]
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "accepts" in extra:
        return str(extra["accepts"])
    kind = info.annotation
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(kind))
    if kind is bool:
        return "true or false"
    base = {int: "a whole number", float: "a number"}.get(kind, "a value") if isinstance(kind, type) else "a value"
    bound = {type(m): m for m in info.metadata}
    least, above, most = bound.get(annotated_types.Ge), bound.get(annotated_types.Gt), bound.get(annotated_types.Le)
    if least is not None and most is not None:
        return f"{base} from {least.ge} to {most.le}"
    if least is not None:
        return f"{base} of at least {least.ge}"
    if above is not None:
        return f"{base} above {above.gt}"
    if most is not None:
        return f"{base} of at most {most.le}"
    return base


def _project_file(config: str | Path | None, environ: Mapping[str, str],
                  cwd: Path) -> tuple[Path, str, dict[str, Any]] | None:
    """The project file's path, its key prefix and its tables, or None when there is none."""
    named, origin = (config, "--config") if config else (environ.get(CONFIG_ENV) or None, CONFIG_ENV)
    if named is not None:
        path = Path(named)
        if not (path if path.is_absolute() else cwd / path).is_file():
            raise SettingsError(f"{origin} {named}: no such file; expected a TOML file of settings tables")
        return path, "", _read_toml(path if path.is_absolute() else cwd / path, path)
    if (cwd / PROJECT_FILE).is_file():
        return Path(PROJECT_FILE), "", _read_toml(cwd / PROJECT_FILE, Path(PROJECT_FILE))
    if (cwd / "pyproject.toml").is_file():
        tables = _read_toml(cwd / "pyproject.toml", Path("pyproject.toml")).get("tool", {}).get("narro")
        if tables is not None:
            return Path("pyproject.toml"), "tool.narro.", tables
    return None


def _read_toml(path: Path, shown: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"{shown}: cannot read it: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{shown}: not valid TOML: {error}") from None


def _file_entries(path: Path, prefix: str, tables: object) -> list[tuple[str, str, object]]:
    """(group, field, value) of every key in the file; any key narro does not know is an error."""
    if not isinstance(tables, dict):
        raise SettingsError(f"{path}: {prefix.rstrip('.')}: expected a table of settings tables")
    entries = []
    for group, table in tables.items():
        owner = next((name for name, model in GROUPS.items() if group in model.model_fields), None)
        if not isinstance(table, dict) and owner is not None:
            raise SettingsError(f"{path}: {prefix}{group}: settings go in their group's table: "
                                f"[{prefix}{owner}] {group} = ...")
        if group not in GROUPS:
            raise SettingsError(f"{path}: {prefix}{group}: no such group{_hint(group, GROUPS)}; "
                                f"groups: {', '.join(GROUPS)}")
        if not isinstance(table, dict):
            raise SettingsError(f"{path}: {prefix}{group}: expected a table, e.g. [{prefix}{group}]")
        known = GROUPS[group].model_fields
        for field, value in table.items():
            if field not in known:
                raise SettingsError(f"{path}: {prefix}{group}.{field}: no such setting{_hint(field, known)}; "
                                    f"[{group}] takes {', '.join(known)}")
            entries.append((group, field, value))
    return entries


def _refuse_unknown_environment(environ: Mapping[str, str]) -> None:
    """A NARRO_<GROUP>_* variable that names no setting is a typo: say so rather than ignore it."""
    names = {env_name(group, field) for group, model in GROUPS.items() for field in model.model_fields}
    prefixes = tuple(f"NARRO_{group.upper()}_" for group in GROUPS)
    for name in sorted(environ):
        if name.startswith(prefixes) and name not in names:
            raise SettingsError(f"{name}: no such setting{_hint(name, names)}; `narro settings` lists them all")


def _hint(name: str, known: object) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)  # type: ignore[call-overload]
    return f" (did you mean {close[0]}?)" if close else ""
