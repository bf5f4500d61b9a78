"""Configuration: defaults, the example file, the command line, clear errors."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from chateau.config import Config, documented_keys, load_config
from chateau.errors import ConfigError
from tests.processes import checkout_env

ROOT = Path(__file__).resolve().parent.parent


def test_defaults():
    config = load_config()
    assert config == Config()
    assert config.server.listen == ("tcp:8888:interface=127.0.0.1",)
    assert config.database.url == "sqlite:///chateau.sqlite3"
    assert config.auth.bcrypt_cost == 12 and config.auth.methods == ("local",)
    assert config.server.max_message_size == 64 * 1024


def test_example_config_lists_every_key_with_its_default():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "conf" / "chateau.ini")
    listed = {(s, k) for s in parser.sections() for k in parser[s]}
    core = {key for key in documented_keys() if key[0] != "ldap"}
    assert core <= listed, f"undocumented keys: {sorted(core - listed)}"
    # Loading the example yields exactly the defaults.
    example = load_config(str(ROOT / "conf" / "chateau.ini"))
    defaults = Config()
    for section in ("server", "database", "auth", "chat", "limits"):
        assert getattr(example, section) == getattr(defaults, section), section


def test_command_line_beats_file(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text("[database]\nurl = sqlite:///file.db\n[server]\nlisten = tcp:1\n")
    config = load_config(str(path), {("database", "url"): "sqlite:///cli.db"})
    assert config.database.url == "sqlite:///cli.db"
    assert config.server.listen == ("tcp:1",)


@pytest.mark.parametrize(
    "text, named",
    [
        ("[auth]\nbcrypt_cost = 99\n", "[auth] bcrypt_cost"),
        ("[auth]\nmethods = kerberos\n", "[auth] methods"),
        ("[server]\nmax_message_size = -1\n", "[server] max_message_size"),
        ("[server]\nmax_mesage_size = 10\n", "[server] max_mesage_size: unknown key"),
        ("[nonsense]\nx = 1\n", "[nonsense]"),
        ("[database]\nurl = ::not a url::\n", "[database] url"),
        ("not an ini file", "--config"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, named):
    path = tmp_path / "bad.ini"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert named in str(info.value)


def test_twistd_help_documents_every_option(tmp_path):
    # The installed copy, as a user runs it: `pip install .` must put the
    # plugin where twistd finds it (scripts/test installs before testing).
    result = subprocess.run(
        ["twistd", "chateau", "--help"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--listen", "--db"):
        assert option in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--listen", "nonsense:1"], "[server] listen: bad endpoint 'nonsense:1'"),
        (["--db", "::nope::"], "[database] url"),
        (["--config", "/does/not/exist.ini"], "No such file"),
    ],
)
def test_bad_option_stops_start_up_with_one_line(tmp_path, args, message):
    result = subprocess.run(
        ["twistd", "-n", "--pidfile=", "chateau", *args], cwd=tmp_path,
        capture_output=True, text=True, timeout=60, env=checkout_env(),
    )
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "chateau.sqlite3").exists()


def test_unreachable_database_stops_start_up(tmp_path):
    result = subprocess.run(
        ["twistd", "-n", "--pidfile=", "chateau", "--listen", "tcp:0:interface=127.0.0.1",
         "--db", "postgresql+psycopg://nobody:hunter2@127.0.0.1:1/none"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=checkout_env(),
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "chateau: cannot use the database" in output
    assert "hunter2" not in output


def test_outdated_schema_stops_start_up_naming_the_upgrade_command(tmp_path):
    from sqlalchemy import text

    from chateau.store import migrate
    from chateau.store.engine import make_engine

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        migrate.prepare(connection)
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    result = subprocess.run(
        ["twistd", "-n", "--pidfile=", "chateau", "--listen", "tcp:0:interface=127.0.0.1",
         "--db", url],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=checkout_env(),
    )
    assert result.returncode != 0
    assert "run `chateau-admin db upgrade`" in result.stdout + result.stderr


def _pem(path: Path, *kinds: str) -> Path:
    path.write_text("".join(f"-----BEGIN {k}-----\nAAAA\n-----END {k}-----\n" for k in kinds))
    return path


def test_redis_url_forms_and_tls_files(tmp_path):
    for url in ("redis://127.0.0.1:6379/0", "redis://:pa%40ss@redis.example:6379/2",
                "redis://chateau:pass@10.0.0.5/0", "rediss://:pass@redis.example:6380/0"):
        assert load_config(None, {("cluster", "redis_url"): url}).cluster.redis_url == url
    ca = _pem(tmp_path / "ca.pem", "CERTIFICATE")
    both = _pem(tmp_path / "node.pem", "CERTIFICATE", "PRIVATE KEY")
    key = _pem(tmp_path / "node.key", "EC PRIVATE KEY")
    config = load_config(None, {
        ("cluster", "redis_url"): "rediss://u:p@redis.example:6380/0",
        ("cluster", "redis_ca_file"): str(ca),
        ("cluster", "redis_cert_file"): str(both),
    })
    assert config.cluster.redis_ca_file == str(ca)
    assert config.cluster.redis_cert_file == str(both) and config.cluster.redis_key_file == ""
    config = load_config(None, {
        ("cluster", "redis_url"): "rediss://u:p@redis.example:6380/0",
        ("cluster", "redis_cert_file"): str(ca), ("cluster", "redis_key_file"): str(key),
    })
    assert config.cluster.redis_key_file == str(key)


@pytest.mark.parametrize("overrides, named", [
    ({"redis_url": "http://:hunter2@redis.example/0"}, "[cluster] redis_url: expected"),
    ({"redis_url": "redis://:hunter2@redis.example:port/0"}, "[cluster] redis_url: the port"),
    ({"redis_url": "redis://:hunter2@redis.example/zero"}, "[cluster] redis_url: the database"),
    ({"redis_url": "redis://:hunter2@[::1/0"}, "[cluster] redis_url: not a URL"),
    ({"redis_url": "redis://hunter2@redis.example/0"}, "[cluster] redis_url: a user name"),
    ({"redis_url": "rediss://:hunter2@redis.example/0?ssl_ca_certs=x"}, "no ?query"),
    ({"redis_url": "rediss://:hunter2@redis.example/0", "redis_ca_file": "/nonexistent.pem"},
     "[cluster] redis_ca_file: cannot read"),
    ({"redis_url": "rediss://:hunter2@redis.example/0", "redis_ca_file": "KEY"},
     "[cluster] redis_ca_file: "),
    ({"redis_url": "redis://:hunter2@redis.example/0", "redis_ca_file": "CA"},
     "[cluster] redis_ca_file: only used with a rediss://"),
    ({"redis_url": "rediss://:hunter2@redis.example/0", "redis_key_file": "KEY"},
     "[cluster] redis_key_file: set redis_cert_file too"),
    ({"redis_url": "rediss://:hunter2@redis.example/0", "redis_cert_file": "CA"},
     "[cluster] redis_key_file: required"),
])
def test_bad_redis_settings_are_named_without_the_password(tmp_path, overrides, named):
    files = {"CA": _pem(tmp_path / "ca.pem", "CERTIFICATE"),
             "KEY": _pem(tmp_path / "k.pem", "PRIVATE KEY")}
    raw = {("cluster", key): str(files.get(value, value)) for key, value in overrides.items()}
    with pytest.raises(ConfigError) as info:
        load_config(None, raw)
    assert named in str(info.value)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value)
