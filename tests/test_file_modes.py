"""Everything agentd creates is 0600 in 0700 folders, and a symlink where it would make a folder is refused."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import WAIT, run_agentctl


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def default_env(env: dict[str, str]) -> dict[str, str]:
    """The test's environment with the socket at its default place, in the runtime folder agentd manages."""
    del env["AGENTD_SOCKET"]
    return env


@pytest.fixture
async def autostarted(default_env: dict[str, str], project: Path) -> AsyncIterator[dict[str, str]]:
    yield default_env
    await run_agentctl("stop", env=default_env, cwd=project)


def _agentd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """agentd run to its refusal: these tests only start ones that must not start."""
    return subprocess.run(
        [sys.executable, "-m", "agentd", *args], env=env, capture_output=True, timeout=WAIT, check=False
    )


async def test_an_autostarted_daemon_makes_its_folders_0700_and_its_files_0600(
    autostarted: dict[str, str], project: Path
) -> None:
    env = autostarted
    old = os.umask(0o022)  # the usual umask, under which files are born 0644
    try:
        result = await run_agentctl("run", "hello", env=env, cwd=project)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    runtime, state, data = (
        Path(env[name]) / "agentd" for name in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_DATA_HOME")
    )
    for folder in (runtime, state, data):
        assert mode(folder) == 0o700, folder
    files = [runtime / "agentd.sock", state / "agentd.log", *sorted(data.iterdir())]
    assert {p.name for p in files} >= {"agentd.db", "agentd.db-wal", "agentd.db-shm", "agentd.db.lock", "agentd.log"}
    assert [(p.name, oct(mode(p))) for p in files] == [(p.name, oct(0o600)) for p in files]


async def test_an_older_daemons_wider_folders_and_files_are_made_private(
    autostarted: dict[str, str], project: Path
) -> None:
    env = autostarted
    state, data = (Path(env[name]) / "agentd" for name in ("XDG_STATE_HOME", "XDG_DATA_HOME"))
    for folder in (state, data):
        folder.mkdir(parents=True, mode=0o755)
        os.chmod(folder, 0o755)
    (state / "agentd.log").write_text("an older daemon's line\n")
    runtime = Path(env["XDG_RUNTIME_DIR"]) / "agentd"
    runtime.mkdir(parents=True, mode=0o700)
    sqlite3.connect(data / "agentd.db").close()
    locks = [runtime / "agentd.sock.lock", runtime / "agentd.sock.start-lock", data / "agentd.db.lock"]
    for path in (state / "agentd.log", data / "agentd.db", *locks):
        path.touch()
        os.chmod(path, 0o644)
    result = await run_agentctl("run", "hello", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert (mode(state), mode(data), mode(state / "agentd.log"), mode(data / "agentd.db")) == (
        0o700,
        0o700,
        0o600,
        0o600,
    )
    assert mode(data / "agentd.db-wal") == 0o600
    assert [(path.name, oct(mode(path))) for path in locks] == [(path.name, oct(0o600)) for path in locks]


async def test_a_data_dir_the_user_named_keeps_its_mode_and_gets_private_files(
    short_tmp: Path, project: Path, env: dict[str, str]
) -> None:
    named = short_tmp / "named"
    named.mkdir()
    os.chmod(named, 0o755)
    from support import Daemon

    from agentctl.autostart import spawn_daemon

    proc = spawn_daemon(Path(env["AGENTD_SOCKET"]), ["--data-dir", str(named)], log_path=short_tmp / "d.log", env=env)
    daemon = Daemon(proc, Path(env["AGENTD_SOCKET"]), short_tmp / "d.log")
    try:
        result = await run_agentctl("run", "hello", env=env, cwd=project)
        assert result.returncode == 0, result.stderr
        assert mode(named) == 0o755
        files = sorted(named.iterdir())
        assert {p.name for p in files} >= {"agentd.db", "agentd.db-wal", "agentd.db-shm", "agentd.db.lock"}
        assert [(p.name, oct(mode(p))) for p in files] == [(p.name, oct(0o600)) for p in files]
        assert mode(short_tmp / "d.log") == 0o600
    finally:
        assert daemon.terminate() == 0


def test_a_data_dir_others_can_write_is_refused(short_tmp: Path, env: dict[str, str]) -> None:
    shared = short_tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    result = _agentd("--socket", str(short_tmp / "agentd.sock"), "--data-dir", str(shared), env=env)
    assert result.returncode == 1
    assert str(shared).encode() in result.stderr and b"writable by other users" in result.stderr
    assert list(shared.iterdir()) == []


@pytest.mark.parametrize("variable", ["XDG_RUNTIME_DIR", "XDG_DATA_HOME"])
def test_a_symlink_in_place_of_a_folder_agentd_manages_is_refused_not_followed(
    short_tmp: Path, default_env: dict[str, str], variable: str
) -> None:
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o755)
    base = Path(default_env[variable])
    base.mkdir(parents=True)
    (base / "agentd").symlink_to(elsewhere)
    result = _agentd(env=default_env)
    assert result.returncode == 1, result.stderr
    assert str(base / "agentd").encode() in result.stderr and b"symlink" in result.stderr
    assert mode(elsewhere) == 0o755  # not chmod'ed through the link
    assert list(elsewhere.iterdir()) == []


async def test_agentctl_starts_no_daemon_when_its_state_folder_is_a_symlink(
    short_tmp: Path, default_env: dict[str, str], project: Path
) -> None:
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o755)
    state = Path(default_env["XDG_STATE_HOME"])
    state.mkdir(parents=True)
    (state / "agentd").symlink_to(elsewhere)
    for command in (["run", "hello"], ["sessions"]):  # both start a daemon when none runs
        result = await run_agentctl(*command, env=default_env, cwd=project)
        assert result.returncode == 3, result.stderr
        assert str(state / "agentd").encode() in result.stderr and b"symlink" in result.stderr, result.stderr
    assert mode(elsewhere) == 0o755
    assert list(elsewhere.iterdir()) == []
    assert not (Path(default_env["XDG_RUNTIME_DIR"]) / "agentd" / "agentd.sock").exists()


def test_open_private_makes_0600_narrows_a_wider_file_and_never_follows_a_symlink(short_tmp: Path) -> None:
    from agentd.paths import open_private

    new = short_tmp / "new.log"
    os.close(open_private(new))
    assert mode(new) == 0o600
    wide = short_tmp / "wide.lock"
    wide.write_text("")
    os.chmod(wide, 0o644)
    os.close(open_private(wide, os.O_RDWR))
    assert mode(wide) == 0o600
    # A symlink put where agentd's file goes is refused, and its target left alone.
    target = short_tmp / "someone-elses"
    target.write_text("theirs\n")
    os.chmod(target, 0o644)
    (short_tmp / "link.log").symlink_to(target)
    with pytest.raises(OSError) as refused:
        open_private(short_tmp / "link.log")
    assert refused.value.errno == errno.ELOOP
    assert (target.read_text(), mode(target)) == ("theirs\n", 0o644)
