"""Finding a profile by path or name, and the name a server command implies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcpwrap.basics.errors import DiscoveryError
from mcpwrap.config.discovery import close_names, find_profile, profile_name_for_command

# --- discovery -----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """outer/.mcpwrap/above.toml, outer/repo (.git) with profiles, config and builtin dirs."""
    outer = tmp_path / "outer"
    repo = outer / "repo"
    cwd = repo / "sub" / "dir"
    config = tmp_path / "config"
    builtin = tmp_path / "builtin"
    files = [
        outer / ".mcpwrap" / "above.toml",
        repo / ".mcpwrap" / "time.toml",
        repo / "sub" / ".mcpwrap" / "near.toml",
        config / "profiles" / "time.toml",
        config / "profiles" / "cfg.toml",
        builtin / "time.toml",
        builtin / "cfg.toml",
        builtin / "bi.toml",
        cwd / "local.toml",
    ]
    (repo / ".git").mkdir(parents=True)
    cwd.mkdir(parents=True)
    for file in files:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("version = 1\n", encoding="utf-8")
    return {"cwd": cwd, "repo": repo, "config": config, "builtin": builtin, "outer": outer}


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("time", "repo/.mcpwrap/time.toml"),
        ("near", "repo/sub/.mcpwrap/near.toml"),
        ("cfg", "config/profiles/cfg.toml"),
        ("bi", "builtin/bi.toml"),
        ("local.toml", "repo/sub/dir/local.toml"),
        ("../../.mcpwrap/time.toml", "repo/sub/dir/../../.mcpwrap/time.toml"),
    ],
)
def test_find_profile(tree: dict[str, Path], name: str, found: str) -> None:
    root = tree["outer"].parent
    got = find_profile(
        name, cwd=str(tree["cwd"]), config_dir=str(tree["config"]), builtin_dir=str(tree["builtin"])
    )
    prefix = "outer/" if found.startswith("repo") else ""
    assert got == str(root / (prefix + found))


def test_find_profile_by_absolute_path(tree: dict[str, Path]) -> None:
    path = str(tree["builtin"] / "bi.toml")
    assert (
        find_profile(path, cwd="/", config_dir="/nonexistent", builtin_dir="/nonexistent") == path
    )


@pytest.mark.parametrize("name", ["missing.toml", "no/such/file", "./nothing"])
def test_find_profile_path_must_exist(tree: dict[str, Path], name: str) -> None:
    with pytest.raises(DiscoveryError, match="does not exist"):
        find_profile(
            name,
            cwd=str(tree["cwd"]),
            config_dir=str(tree["config"]),
            builtin_dir=str(tree["builtin"]),
        )


def test_find_profile_stops_at_the_project_root_and_says_how_to_create_one(
    tree: dict[str, Path],
) -> None:
    with pytest.raises(DiscoveryError) as info:
        find_profile(
            "above",
            cwd=str(tree["cwd"]),
            config_dir=str(tree["config"]),
            builtin_dir=str(tree["builtin"]),
        )
    message = str(info.value)
    looked = [
        tree["cwd"] / ".mcpwrap" / "above.toml",
        tree["repo"] / "sub" / ".mcpwrap" / "above.toml",
        tree["repo"] / ".mcpwrap" / "above.toml",
        tree["config"] / "profiles" / "above.toml",
        tree["builtin"] / "above.toml",
    ]
    assert [line.strip() for line in message.splitlines()[1:-1]] == [str(p) for p in looked]
    assert "`mcpwrap init above -- CMD...`" in message
    assert str(tree["outer"] / ".mcpwrap") not in message


BUILTIN = [
    "mcp-server-fetch",
    "mcp-server-git",
    "mcp-server-sqlite",
    "mcp-server-time",
    "postgres",
    "server-everything",
    "server-filesystem",
]


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("filesystem", ["server-filesystem"]),  # the old short names, as words of the new
        ("time", ["mcp-server-time"]),
        ("Time", ["mcp-server-time"]),
        ("everything", ["server-everything"]),
        ("tme", ["mcp-server-time"]),  # spelled like a word
        ("sever-filesystem", ["server-filesystem"]),  # spelled like a whole name
        ("postgress", ["postgres"]),
        ("fs", []),  # nothing close: no guess
        ("get", []),
        ("server", ["mcp-server-fetch", "mcp-server-git", "mcp-server-sqlite"]),  # at most 3
    ],
)
def test_close_names(typed: str, meant: list[str]) -> None:
    assert close_names(typed, BUILTIN) == meant


def test_a_misspelled_name_gets_a_suggestion_from_every_place_searched(
    tree: dict[str, Path],
) -> None:
    def missing(name: str) -> str:
        with pytest.raises(DiscoveryError) as info:
            find_profile(
                name,
                cwd=str(tree["cwd"]),
                config_dir=str(tree["config"]),
                builtin_dir=str(tree["builtin"]),
            )
        return str(info.value).splitlines()[0]

    assert missing("tim") == 'no profile named "tim" (did you mean time?); looked in:'
    assert missing("naer") == 'no profile named "naer" (did you mean near?); looked in:'
    assert missing("bii") == 'no profile named "bii" (did you mean bi?); looked in:'
    assert missing("zzz") == 'no profile named "zzz"; looked in:'
    assert "above" not in missing("abvoe")  # beyond the project root: not found, not offered


def test_find_profile_without_git_searches_up_to_the_root(tmp_path: Path) -> None:
    (tmp_path / ".mcpwrap").mkdir()
    (tmp_path / ".mcpwrap" / "zz-mcpwrap-test.toml").write_text("version = 1\n", encoding="utf-8")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    found = find_profile(
        "zz-mcpwrap-test", cwd=str(deep), config_dir="/nonexistent", builtin_dir="/nonexistent"
    )
    assert found == str(tmp_path / ".mcpwrap" / "zz-mcpwrap-test.toml")
    with pytest.raises(DiscoveryError) as info:
        find_profile(
            "zz-none", cwd=str(deep), config_dir="/nonexistent", builtin_dir="/nonexistent"
        )
    assert f"\n  {os.sep}.mcpwrap{os.sep}zz-none.toml\n" in str(info.value)


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["mcp-server-time"], "mcp-server-time"),
        (["/usr/local/bin/mcp-server-git", "--repo", "x"], "mcp-server-git"),
        (["./server.py"], "server"),
        (["npx", "-y", "@modelcontextprotocol/server-filesystem@1.2", "/tmp"], "server-filesystem"),
        (["npx", "@modelcontextprotocol/server-filesystem", "/tmp"], "server-filesystem"),
        (["/usr/bin/npx", "--package", "foo", "bar"], "bar"),
        (["npx", "--package=foo", "bar@2"], "bar"),
        (["npx", "-c", "echo hi"], "npx"),
        (["bunx", "@scope/pkg@latest"], "pkg"),
        (["pnpm", "dlx", "@scope/tool"], "tool"),
        (["pnpm", "install"], "pnpm"),
        (["npm", "exec", "--", "@scope/tool@2"], "tool"),
        (["npm", "start"], "npm"),
        (["uvx", "mcp-server-time==1.0"], "mcp-server-time"),
        (["uvx", "mcp-server-fetch[extra]>=1"], "mcp-server-fetch"),
        (["uvx", "--from", "git+https://github.com/x/y", "mcp-server-y"], "mcp-server-y"),
        (["uvx", "git+https://github.com/org/mcp-x.git"], "mcp-x"),
        (["uv", "tool", "run", "mcp-server-fetch"], "mcp-server-fetch"),
        (["uv", "run", "--with", "mcp", "server.py"], "server"),
        (["pipx", "run", "mcp-server-fetch"], "mcp-server-fetch"),
        (["pipx", "run", "--spec", "x", "mcp-y"], "mcp-y"),
        (["node", "dist/index.js"], "index"),
        (["node", "--require", "x.js", "./build/server.mjs"], "server"),
        (["node", "-e", "1"], "node"),
        (["node", "."], "node"),
        (["python", "server.py"], "server"),
        (["python3", "-u", "/srv/mcp/weather.py"], "weather"),
        (["python3.12", "-m", "mcp_server_time", "--local-timezone", "UTC"], "mcp_server_time"),
        (["/usr/bin/python3", "-m", "pkg.sub"], "pkg"),
        (["python", "-c", "print(1)", "x"], "python"),
        (["deno", "run", "-A", "https://deno.land/x/mcp/server.ts"], "server"),
        (["npx"], "npx"),
        (["uvx", "--from"], "uvx"),
    ],
)
def test_profile_name_for_command(argv: list[str], name: str) -> None:
    assert profile_name_for_command(argv) == name


@pytest.mark.parametrize("argv", [[], [""]])
def test_profile_name_for_no_command(argv: list[str]) -> None:
    with pytest.raises(DiscoveryError, match="no server command"):
        profile_name_for_command(argv)
