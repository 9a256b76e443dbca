"""Settings: precedence and sources, one-line errors before anything renders, masking, one reader of os.environ."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.cli import main
from narro.errors import SettingsError
from narro.settings import GROUPS, EdgeSettings, Settings, env_name
from tests.conftest import EXAMPLE_MANIFEST

REPO = Path(__file__).resolve().parent.parent
TOKEN = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No NARRO_* variable or project file of the machine running the tests leaks in."""
    for name in [n for n in os.environ if n.startswith("NARRO_") and n != "NARRO_CATALOGUE"]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def shown(output: str) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(output)["settings"]}


def test_each_setting_has_a_docstring_a_default_and_one_environment_name():
    names = [env_name(group, field) for group, model in GROUPS.items() for field in model.model_fields]
    assert len(names) == len(set(names))
    for group, model in GROUPS.items():
        for field, info in model.model_fields.items():
            assert info.description, f"{group}.{field} has no docstring"
            assert not info.is_required(), f"{group}.{field} has no default"
    # The names narro has always read keep working.
    assert env_name("qa", "max_takes") == "NARRO_QA_MAX_TAKES" and env_name("catalogue", "url") == "NARRO_CATALOGUE"
    assert env_name("dashboard", "retry_deployment") == "NARRO_RETRY_DEPLOYMENT"
    assert env_name("edge", "concurrency") == "NARRO_EDGE_CONCURRENCY"


def test_precedence_is_flag_then_environment_then_file_then_default(tmp_path: Path):
    (tmp_path / "narro.toml").write_text(
        '[qa]\nmax_takes = 4\nmax_wer = 0.2\n[edge]\nretries = 2\n[catalogue]\nurl = "sqlite:///from-file.db"\n')
    settings = Settings.load(environ={"NARRO_QA_MAX_TAKES": "5", "NARRO_CATALOGUE": "sqlite:///from-env.db"},
                             cwd=tmp_path)
    assert (settings.qa.max_takes, settings.qa.max_wer, settings.edge.retries) == (5, 0.2, 2)
    assert settings.qa.max_gap_words == 4
    assert settings.source("qa.max_takes") == "environment:NARRO_QA_MAX_TAKES"
    assert settings.source("qa.max_wer") == "file:narro.toml" and settings.source("edge.retries") == "file:narro.toml"
    assert settings.source("qa.max_gap_words") == "default" and settings.file == "narro.toml"
    flagged = settings.with_flag("catalogue.url", "sqlite:///from-flag.db", "--catalogue")
    assert flagged.catalogue.url == "sqlite:///from-flag.db" and flagged.source("catalogue.url") == "flag:--catalogue"
    assert settings.catalogue.url == "sqlite:///from-env.db"  # frozen: the flag made a copy
    assert flagged.with_flag("s3.endpoint_url", None, "--endpoint-url") is flagged  # a flag not given changes nothing


def test_narro_settings_shows_values_and_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "narro.toml").write_text("[qa]\nmax_takes = 4\nmax_wer = 0.25\n[watermark]\norg_id = 0x6F\n")
    monkeypatch.setenv("NARRO_QA_MAX_TAKES", "6")
    monkeypatch.setenv("NARRO_EDGE_RETRIES", "")  # empty counts as unset
    result = CliRunner().invoke(main, ["settings", "--json", "--catalogue", "sqlite:///flag.db"])
    assert result.exit_code == 0, result.output
    rows = shown(result.stdout)
    assert rows["qa.max_takes"] == {"name": "qa.max_takes", "value": 6, "source": "environment:NARRO_QA_MAX_TAKES",
                                    "env": "NARRO_QA_MAX_TAKES"}
    assert (rows["qa.max_wer"]["value"], rows["qa.max_wer"]["source"]) == (0.25, "file:narro.toml")
    assert (rows["watermark.org_id"]["value"], rows["edge.retries"]["source"]) == (0x6F, "default")
    assert rows["catalogue.url"]["value"] == "sqlite:///flag.db" and rows["catalogue.url"]["source"] == "flag:--catalogue"
    assert set(rows) == {f"{g}.{f}" for g, model in GROUPS.items() for f in model.model_fields}
    text = CliRunner().invoke(main, ["settings"]).stdout
    assert re.search(r"^qa\.max_takes\s+= 6\s+environment:NARRO_QA_MAX_TAKES\s+NARRO_QA_MAX_TAKES$", text, re.M)
    assert re.search(r"^qa\.max_wer\s+= 0\.25\s+file:narro\.toml\s+NARRO_QA_MAX_WER$", text, re.M)


def test_a_tool_narro_table_in_pyproject_is_read(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.narro.edge]\nconcurrency = 3\n')
    settings = Settings.load(environ={}, cwd=tmp_path)
    assert settings.edge.concurrency == 3 and settings.source("edge.concurrency") == "file:pyproject.toml"
    (tmp_path / "pyproject.toml").write_text('[tool.narro.edge]\nconcurency = 3\n')
    with pytest.raises(SettingsError, match=r"^pyproject.toml: tool.narro.edge.concurency: no such setting "
                                            r"\(did you mean concurrency\?\)"):
        Settings.load(environ={}, cwd=tmp_path)


def test_config_names_the_file_by_flag_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "narro.toml").write_text("[qa]\nmax_takes = 4\n")
    (tmp_path / "ci.toml").write_text("[qa]\nmax_takes = 7\n")
    monkeypatch.setenv("NARRO_CONFIG", "ci.toml")
    assert shown(CliRunner().invoke(main, ["settings", "--json"]).stdout)["qa.max_takes"]["source"] == "file:ci.toml"
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "narro.toml"), "settings", "--json"])
    assert shown(result.stdout)["qa.max_takes"]["value"] == 4
    result = CliRunner().invoke(main, ["--config", "missing.toml", "settings"])
    assert result.exit_code == 2 and result.stderr.strip() == (
        "error: --config missing.toml: no such file; expected a TOML file of settings tables")


BAD_ENVIRONMENT = [
    ("NARRO_QA_MAX_TAKES", "abc", "NARRO_QA_MAX_TAKES='abc': expected a whole number of at least 1"),
    ("NARRO_QA_MAX_TAKES", "-1", "NARRO_QA_MAX_TAKES='-1': expected a whole number of at least 1"),
    ("NARRO_QA_MAX_WER", "nan", "NARRO_QA_MAX_WER='nan': expected a number of at least 0"),
    ("NARRO_QA_ASR", "maybe", "NARRO_QA_ASR='maybe': expected true or false"),
    ("NARRO_EDGE_RETRIES", "3x", "NARRO_EDGE_RETRIES='3x': expected a whole number of at least 0"),
    ("NARRO_EDGE_TIMEOUT_S", "0", "NARRO_EDGE_TIMEOUT_S='0': expected a number above 0"),
    ("NARRO_EDGE_WSS_URL", "wss://example.org/edge", "NARRO_EDGE_WSS_URL='wss://example.org/edge': "
                                                     "expected a ws:// or wss:// URL containing '?'"),
    ("NARRO_WATERMARK_ORG_ID", "256", "NARRO_WATERMARK_ORG_ID='256': expected a whole number from 0 to 255"),
    ("NARRO_CODEC_LM_DEVICE", "gpu", "NARRO_CODEC_LM_DEVICE='gpu': expected one of auto, cpu, cuda"),
    ("NARRO_RETRY_DEPLOYMENT", "narro", "NARRO_RETRY_DEPLOYMENT='narro': expected FLOW/DEPLOYMENT"),
    ("NARRO_DASHBOARD_TOKEN", "short", "NARRO_DASHBOARD_TOKEN: expected a secret of at least 12 random characters"),
    ("NARRO_QA_MAX_TAKE", "3", "NARRO_QA_MAX_TAKE: no such setting (did you mean NARRO_QA_MAX_TAKES?)"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_ENVIRONMENT, ids=[f"{n}={v}" for n, v, _ in BAD_ENVIRONMENT])
def test_a_bad_value_stops_render_with_one_line_before_anything_is_written(name: str, value: str, message: str,
                                                                          tmp_path: Path, isolated_catalogue: str,
                                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(name, value)
    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["render", str(EXAMPLE_MANIFEST), "--store", str(store)])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {message}")
    if name == "NARRO_DASHBOARD_TOKEN":
        assert value not in result.stderr.removeprefix(f"error: {name}")  # a secret is never echoed
    assert not store.exists() and not Path(isolated_catalogue.removeprefix("sqlite:///")).exists()


def test_a_bad_flag_value_names_the_flag():
    result = CliRunner().invoke(main, ["render", str(EXAMPLE_MANIFEST), "--endpoint-url", "localhost:9000"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --endpoint-url 'localhost:9000': expected an http:// or https:// URL"


@pytest.mark.parametrize(("body", "message"), [
    ("[qa]\nmax_take = 4\n", "narro.toml: qa.max_take: no such setting (did you mean max_takes?); [qa] takes max_wer,"),
    ("[quality]\nmax_takes = 4\n", "narro.toml: quality: no such group; groups: qa, asr, edge,"),
    ("max_takes = 4\n", "narro.toml: max_takes: settings go in their group's table: [qa] max_takes = ..."),
    ("[qa]\nmax_takes = -2\n", "narro.toml: qa.max_takes = -2: expected a whole number of at least 1"),
    ("[edge]\nconcurrency = 2.5\n", "narro.toml: edge.concurrency = 2.5: expected a whole number of at least 1"),
    ("[qa\nmax_takes = 4\n", "narro.toml: not valid TOML: "),
], ids=["unknown key", "unknown group", "key outside a table", "negative", "fraction", "syntax"])
def test_a_bad_project_file_names_file_and_key(body: str, message: str, tmp_path: Path):
    (tmp_path / "narro.toml").write_text(body)
    result = CliRunner().invoke(main, ["render", str(EXAMPLE_MANIFEST), "--store", str(tmp_path / "store")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert not (tmp_path / "store").exists()


def test_environment_overrides_a_bad_file_value_and_errors_name_the_winning_source(tmp_path: Path):
    (tmp_path / "narro.toml").write_text("[qa]\nmax_takes = -2\n")
    assert Settings.load(environ={"NARRO_QA_MAX_TAKES": "2"}, cwd=tmp_path).qa.max_takes == 2
    with pytest.raises(SettingsError, match=r"^NARRO_QA_MAX_TAKES='0'"):
        Settings.load(environ={"NARRO_QA_MAX_TAKES": "0"}, cwd=tmp_path)


def test_secrets_are_masked_and_never_leave_for_a_flow(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NARRO_DASHBOARD_TOKEN", TOKEN)
    monkeypatch.setenv("NARRO_CATALOGUE", "postgresql://narro:hunter2hunter2@db.example/narro")
    for args in (["settings"], ["settings", "--json"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0 and TOKEN not in result.output and "hunter2hunter2" not in result.output
    rows = shown(CliRunner().invoke(main, ["settings", "--json"]).stdout)
    assert rows["dashboard.token"]["value"] == "********"
    assert rows["catalogue.url"]["value"] == "postgresql://narro:********@db.example/narro"
    settings = Settings.load()
    assert settings.dashboard.token is not None and settings.dashboard.token.get_secret_value() == TOKEN
    # What a flow run receives (and a deployment stores in the Prefect API): everything but the secret.
    dumped = settings.model_dump_json()
    assert TOKEN not in dumped
    again = Settings.model_validate_json(dumped)
    assert again.dashboard.token is None and again.dashboard.retry_deployment == settings.dashboard.retry_deployment
    assert all(getattr(again, group) == getattr(settings, group) for group in GROUPS if group != "dashboard")


def test_settings_are_hashable_so_engines_can_be_cached_per_settings():
    fast = Settings(edge=EdgeSettings(retries=1))
    assert hash(fast) == hash(Settings(edge=EdgeSettings(retries=1))) and fast != Settings()


# Places outside narro/settings.py that may touch os.environ, each with its reason.
ALLOWED_ENVIRONMENT_USE = {
    ("narro/prefect_api.py", 'os.environ.setdefault("PREFECT_'):
        "configures Prefect, a third-party library, before it is imported; not a narro setting",
    ("narro/prefect_api.py", 'os.environ.setdefault("DO_NOT_TRACK"'):
        "configures Prefect before it is imported; not a narro setting",
    ("narro/asr.py", 'os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY"'):
        "bounds oneDNN's kernel cache inside CTranslate2 before it is used; not a narro setting",
    ("narro/procs.py", "return {**os.environ, **extra}"):
        "passes this process's environment on to the child services it starts",
}
ENVIRONMENT_USE = re.compile(r"\bos\.environ\b|\bgetenv\b|\bfrom os import\b.*\benviron\b|\bputenv\b")


def test_nothing_but_settings_reads_the_environment():
    found = []
    for folder in ("narro", "flows", "tasks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative == "narro/settings.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                allowed = any(relative == place and snippet in line for place, snippet in ALLOWED_ENVIRONMENT_USE)
                if ENVIRONMENT_USE.search(line) and not allowed:
                    found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "read settings through narro.settings, not os.environ:\n" + "\n".join(found)


def test_the_grep_catches_a_read():
    assert ENVIRONMENT_USE.search('x = os.environ.get("NARRO_X")') and ENVIRONMENT_USE.search("os.getenv('A')")
    assert ENVIRONMENT_USE.search("from os import environ") and not ENVIRONMENT_USE.search("environment = 1")
