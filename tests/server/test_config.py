"""Config loading and the CLI's handling of bad configuration (no database needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cairn.core.errors import ConfigError
from cairn.server import config
from tests.support.server import cairn_server_command, write_toml


def _load(tmp_path: Path, doc: dict, **overrides: object) -> config.Config:
    write_toml(tmp_path / config.CONFIG_NAME, doc)
    return config.load(tmp_path, overrides)


def test_defaults_fill_everything(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {})
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8470)
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}"
    assert cfg.blobs == {"kind": "local", "path": str(tmp_path / "blobs")}
    assert cfg.limits.commit_ops == 1000 and cfg.limits.chunk_body == 16 * 2**20 + 64


def test_generated_file_loads_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / config.CONFIG_NAME).write_text(config.default_toml())
    cfg = config.load(tmp_path)
    assert cfg.rate_limits.login_failures == 10
    assert cfg.hints_backend == "memory"


def test_overrides_win_over_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_LISTEN", "127.0.0.1:9000")
    cfg = _load(tmp_path, {"listen": "0.0.0.0:1"})
    assert cfg.port == 9000
    cfg = _load(tmp_path, {"listen": "0.0.0.0:1"}, listen="[::1]:7000")
    assert (cfg.host, cfg.port, cfg.url) == ("::1", 7000, "http://[::1]:7000")


def test_relative_sqlite_path_is_under_data_dir(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"database_url": "sqlite+aiosqlite:///other.db"})
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"lisen": "127.0.0.1:1"}, "lisen"),
        ({"listen": "nonsense"}, "listen"),
        ({"listen": 8470}, "listen"),
        ({"limits": {"json_body": -1}}, "limits.json_body"),
        ({"limits": {"json_body": "big"}}, "limits.json_body"),
        ({"limits": {"jsonbody": 1}}, "limits.jsonbody"),
        ({"rate_limits": {"login_failures": True}}, "rate_limits.login_failures"),
        ({"blobs": 3}, "blobs"),
        ({"database_url": "mysql://x"}, "database_url"),
        ({"hints": {"backend": "postgres"}}, "hints.backend"),
        ({"cpu_threads": 0}, "cpu_threads"),
    ],
)
def test_bad_key_is_named(tmp_path: Path, doc: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, doc)
    assert str(info.value).startswith(f"{key}:")


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cairn-server init"):
        config.load(tmp_path / "nowhere")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cairn_server_command(), *args], capture_output=True, text=True, timeout=60
    )


def test_cli_names_the_bad_key_in_one_line(tmp_path: Path) -> None:
    write_toml(tmp_path / config.CONFIG_NAME, {"limits": {"commit_ops": 0}})
    res = _run("run", "--data", str(tmp_path))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "cairn-server: limits.commit_ops: must be an integer >= 1"
    ]


def test_cli_bad_toml_and_data_before_subcommand(tmp_path: Path) -> None:
    (tmp_path / config.CONFIG_NAME).write_text("listen = ")
    res = _run("--data", str(tmp_path), "run")
    assert res.returncode == 1
    assert "not valid TOML" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _run("frobnicate").returncode == 2
    assert _run("user", "add").returncode == 2


def test_init_refuses_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep me")
    res = _run("init", str(tmp_path))
    assert res.returncode == 1
    assert "not empty" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "precious").read_text() == "keep me"
    assert not (tmp_path / config.CONFIG_NAME).exists()
