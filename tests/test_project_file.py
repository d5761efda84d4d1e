"""A project's .agentd/config.toml: its [mcp.NAME] tables as config.toml reads them, its digest, and what is refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import attrs
import pytest
import trio

from agentd.mcp import McpServerConfig
from agentd.models import MAX_PROJECT_CONFIG_BYTES, PROJECT_CONFIG, ProjectConfig, read_project_config

SERVERS = """\
[mcp.notes]
command = ["python3", "-m", "notes_server"]
env = { NOTES_DB = "notes.db" }
allow = ["search"]

[mcp.docs]
url = "http://127.0.0.1:8000/mcp"
enabled = false
"""


def write_project_file(root: Path, text: str | bytes) -> Path:
    path = root / PROJECT_CONFIG
    path.parent.mkdir(exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


async def read(root: Path) -> ProjectConfig | None:
    with trio.fail_after(5):
        return await read_project_config(str(root))


async def read_mistakes(root: Path) -> tuple[str, ...]:
    project = await read(root)
    assert project is not None
    assert project.servers == ()
    return project.mistakes


async def test_no_file_and_no_directory_are_no_project_config(tmp_path: Path) -> None:
    assert await read(tmp_path) is None
    (tmp_path / ".agentd").mkdir()
    assert await read(tmp_path) is None


async def test_a_project_files_servers_are_read_as_the_workspaces_with_the_digest_of_its_bytes(tmp_path: Path) -> None:
    path = write_project_file(tmp_path, SERVERS)
    project = await read(tmp_path)
    assert project == ProjectConfig(
        path=str(path),
        digest=hashlib.sha256(SERVERS.encode()).hexdigest(),
        servers=(
            McpServerConfig(
                name="notes",
                command=("python3", "-m", "notes_server"),
                env={"NOTES_DB": "notes.db"},
                allow=("search",),
                source="workspace",
            ),
            McpServerConfig(name="docs", url="http://127.0.0.1:8000/mcp", enabled=False, source="workspace"),
        ),
    )


async def test_an_empty_project_file_has_no_servers_and_no_mistakes(tmp_path: Path) -> None:
    write_project_file(tmp_path, "")
    assert await read(tmp_path) == ProjectConfig(
        str(tmp_path / PROJECT_CONFIG), hashlib.sha256(b"").hexdigest(), (), ()
    )


async def test_a_changed_file_has_another_digest(tmp_path: Path) -> None:
    write_project_file(tmp_path, SERVERS)
    before = await read(tmp_path)
    write_project_file(tmp_path, SERVERS.replace("search", "read"))
    after = await read(tmp_path)
    assert before is not None and after is not None
    assert before.digest != after.digest


async def test_only_the_digest_the_store_holds_for_the_file_is_trust(tmp_path: Path) -> None:
    write_project_file(tmp_path, SERVERS)
    project = await read(tmp_path)
    assert project is not None
    assert project.is_trusted(project.digest)
    assert not project.is_trusted(None)
    assert not project.is_trusted(hashlib.sha256(b"what it said before").hexdigest())
    # A file that could not be read has no digest: nothing the store holds makes it trusted.
    assert not attrs.evolve(project, digest="").is_trusted("")


async def test_any_key_but_mcp_tables_is_a_mistake_naming_it_and_no_server_is_read(tmp_path: Path) -> None:
    path = write_project_file(
        tmp_path,
        'default_model = "fast"\n\n[permissions]\nallow = ["*"]\n\n[mcp.s]\ncommand = ["s"]\n',
    )
    only = "only [mcp.NAME] tables are read from a project's .agentd/config.toml"
    assert await read_mistakes(tmp_path) == (
        f"{path}:1: unknown top-level key 'default_model': {only}",
        f"{path}:3: unknown top-level key 'permissions': {only}",
    )


async def test_a_project_files_mcp_mistakes_are_those_of_config_toml_on_their_lines(tmp_path: Path) -> None:
    path = write_project_file(tmp_path, '[mcp.s]\ncommand = ["s"]\nenabled = "yes"\n\n[mcp.h]\nheaders = {}\n')
    assert await read_mistakes(tmp_path) == (
        f"{path}:3: [mcp.s] enabled must be true or false, not a string",
        f"{path}:5: [mcp.h] needs command (a program to start, spoken to on stdio) or url (streamable HTTP)",
    )


async def test_a_project_file_that_is_not_toml_or_not_utf8_is_a_mistake(tmp_path: Path) -> None:
    path = write_project_file(tmp_path, "[mcp.s\n")
    (mistake,) = await read_mistakes(tmp_path)
    assert mistake.startswith(f"{path}:1: ")
    write_project_file(tmp_path, b"# caf\xe9\n")
    assert await read_mistakes(tmp_path) == (f"{path}:1: the file is not UTF-8 text",)


async def test_a_file_over_a_mebibyte_is_refused_unread(tmp_path: Path) -> None:
    path = write_project_file(tmp_path, "#" * MAX_PROJECT_CONFIG_BYTES + "\n")
    project = await read(tmp_path)
    assert project is not None
    assert project.mistakes == (f"{path}: is larger than 1 MiB ({MAX_PROJECT_CONFIG_BYTES + 1} bytes)",)
    assert (project.servers, project.digest) == ((), "")
    write_project_file(tmp_path, "#" * (MAX_PROJECT_CONFIG_BYTES - 1) + "\n")
    assert (await read_mistakes(tmp_path)) == ()


async def test_a_symlink_that_leads_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "project", tmp_path / "elsewhere.toml"
    root.mkdir()
    elsewhere.write_text(SERVERS)
    (root / ".agentd").mkdir()
    (root / PROJECT_CONFIG).symlink_to(elsewhere)
    assert await read_mistakes(root) == (
        f"{root / PROJECT_CONFIG}: is a symlink that leads outside the workspace (to {elsewhere}); it is not read",
    )


async def test_a_directory_symlinked_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "project", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write_project_file(outside, SERVERS)
    (root / ".agentd").symlink_to(outside / ".agentd")
    (mistake,) = await read_mistakes(root)
    assert "is a symlink that leads outside the workspace" in mistake


async def test_a_symlink_inside_the_workspace_is_followed(tmp_path: Path) -> None:
    (tmp_path / "shared.toml").write_text(SERVERS)
    (tmp_path / ".agentd").mkdir()
    (tmp_path / PROJECT_CONFIG).symlink_to("../shared.toml")
    project = await read(tmp_path)
    assert project is not None and [s.name for s in project.servers] == ["notes", "docs"]


async def test_a_symlink_to_nothing_is_no_project_config(tmp_path: Path) -> None:
    (tmp_path / ".agentd").mkdir()
    (tmp_path / PROJECT_CONFIG).symlink_to("missing.toml")
    assert await read(tmp_path) is None


async def test_a_directory_where_the_file_belongs_is_refused(tmp_path: Path) -> None:
    (tmp_path / PROJECT_CONFIG).mkdir(parents=True)
    assert await read_mistakes(tmp_path) == (
        f"{tmp_path / PROJECT_CONFIG}: is not a regular file (a directory); it is not read",
    )


async def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    (tmp_path / ".agentd").mkdir()
    fifo = tmp_path / PROJECT_CONFIG
    os.mkfifo(fifo)
    waited_for_a_writer = False

    async def writer_after_a_while() -> None:
        # A read that waits for a writer cannot be cancelled in its thread: this one ends it, and the test fails.
        nonlocal waited_for_a_writer
        await trio.sleep(5)
        waited_for_a_writer = True
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer_after_a_while)
        project = await read_project_config(str(tmp_path))
        nursery.cancel_scope.cancel()
    assert not waited_for_a_writer
    assert project is not None
    assert project.mistakes == (f"{fifo}: is not a regular file (a named pipe); it is not read",)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_an_unreadable_file_is_a_mistake_saying_why(tmp_path: Path) -> None:
    path = write_project_file(tmp_path, SERVERS)
    path.chmod(0)
    assert await read_mistakes(tmp_path) == (f"{path}: cannot be read: Permission denied",)
