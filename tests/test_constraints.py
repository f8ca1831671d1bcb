"""mcpwrap.policy.constraints: argument checks of [tools.NAME.args].

Paths are checked against a real directory tree with real symlinks, resolved by
os.path.realpath exactly as in production; constraints come from parse_profile so the
tests follow the real loader (placeholders, host normalisation).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from mcpwrap.config.profile import Constraint, Placeholders, parse_profile
from mcpwrap.policy.constraints import (
    check_value,
    host_matches,
    normalise_host,
    path_within,
    url_host_allowed,
)


@dataclass(frozen=True)
class Tree:
    base: Path
    proj: Path
    outside: Path
    home: Path

    def within(self, value: str) -> str | None:
        return path_within(value, [str(self.proj)], cwd=str(self.proj), resolve=os.path.realpath)


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tree:
    """
    base/proj/              the only root
        file.txt
        sub/a/b/
        in_link -> sub              (inside to inside)
        out_link -> ../outside      (inside to outside)
        chain1 -> chain2 -> ../outside
        away -> ../outside/deep/dir (away/../secret: physically outside, lexically inside)
        up -> sub/a/b               (up/../../outside: lexically outside, physically inside)
    base/outside/secret, base/outside/deep/dir/
    base/proj-evil/x
    base/home/                  $HOME, outside the root
    """
    base = tmp_path.resolve()
    proj, outside, home = base / "proj", base / "outside", base / "home"
    for d in (proj / "sub/a/b", outside / "deep/dir", base / "proj-evil", home):
        d.mkdir(parents=True)
    (proj / "file.txt").write_text("ok")
    (outside / "secret").write_text("secret")
    (base / "proj-evil/x").write_text("evil")
    (proj / "in_link").symlink_to("sub")
    (proj / "out_link").symlink_to("../outside")
    (proj / "chain2").symlink_to("../outside")
    (proj / "chain1").symlink_to("chain2")
    (proj / "away").symlink_to("../outside/deep/dir")
    (proj / "up").symlink_to("sub/a/b")
    monkeypatch.setenv("HOME", str(home))
    return Tree(base, proj, outside, home)


# --- paths -------------------------------------------------------------------------------

INSIDE = [
    ("file.txt", "relative"),
    ("./file.txt", "dot-relative"),
    (".", "dot"),
    ("{proj}", "root-itself"),
    ("{proj}/", "root-trailing-slash"),
    ("{proj}/file.txt", "absolute"),
    ("sub/a/b", "nested"),
    ("sub/../file.txt", "dotdot-inside"),
    ("in_link/a", "symlink-inside"),
    ("not/yet/there.txt", "nonexistent"),
    ("~dir/x", "tilde-named-dir-of-unknown-user"),
    ("file://{proj}/file.txt", "file-uri"),
    ("file://localhost{proj}/file.txt", "file-uri-localhost"),
    ("file:{proj}/file.txt", "file-uri-one-slash"),
    ("FILE://{proj}/file.txt", "file-uri-upper-scheme"),
    ("file://{proj}/with%20space", "file-uri-percent"),
]

OUTSIDE = [
    ("..", "parent"),
    ("../outside/secret", "dotdot"),
    ("sub/../../outside/secret", "dotdot-after-subdir"),
    ("sub/a/b/../../../../outside", "deep-dotdot"),
    ("{outside}/secret", "absolute-outside"),
    ("/etc/passwd", "etc-passwd"),
    ("/", "fs-root"),
    ("//etc/passwd", "double-slash"),
    ("out_link", "symlink-out"),
    ("out_link/secret", "through-symlink-out"),
    ("chain1/secret", "symlink-chain"),
    ("away/../secret", "physical-only-escape"),
    ("up/../../outside", "lexical-only-escape"),
    ("{base}/proj-evil/x", "prefix-trick"),
    ("../proj-evil/x", "prefix-trick-relative"),
    ("~", "tilde"),
    ("~/x", "tilde-slash"),
    ("~root/x", "tilde-user"),
    ("file:///etc/passwd", "file-uri-outside"),
    ("file://{proj}/../outside/secret", "file-uri-dotdot"),
    ("file://{proj}/%2e%2e/outside/secret", "file-uri-encoded-dotdot"),
    ("file://{proj}/out_link/secret", "file-uri-symlink"),
    ("file:~/x", "file-uri-tilde"),
]

REFUSED_FORMS = [
    ("", "empty", "empty"),
    ("file.txt\x00", "nul", "NUL"),
    ("a\x00/../../etc", "nul-middle", "NUL"),
    ("file://evil.test{proj}/file.txt", "file-uri-remote-host", "is a URI"),
    ("http://localhost{proj}/file.txt", "http-uri", "is a URI"),
    ("https://x/y", "https-uri", "is a URI"),
    ("data:text/plain,x", "data-uri", "is a URI"),
    ("javascript:alert(1)", "javascript-uri", "is a URI"),
    ("smb://host/share", "smb-uri", "is a URI"),
]


def _fill(template: str, tree: Tree) -> str:
    return template.format(proj=tree.proj, outside=tree.outside, base=tree.base)


@pytest.mark.parametrize("value", [v for v, _ in INSIDE], ids=[i for _, i in INSIDE])
def test_path_inside(tree: Tree, value: str) -> None:
    assert tree.within(_fill(value, tree)) is None


@pytest.mark.parametrize("value", [v for v, _ in OUTSIDE], ids=[i for _, i in OUTSIDE])
def test_path_outside(tree: Tree, value: str) -> None:
    reason = tree.within(_fill(value, tree))
    assert reason is not None
    assert "resolves outside" in reason


@pytest.mark.parametrize(
    ("value", "words"), [(v, w) for v, _, w in REFUSED_FORMS], ids=[i for _, i, _ in REFUSED_FORMS]
)
def test_path_refused_forms(tree: Tree, value: str, words: str) -> None:
    reason = tree.within(_fill(value, tree))
    assert reason is not None
    assert words in reason


def test_symlink_readings_really_differ(tree: Tree) -> None:
    """The two escape cases above are only meaningful if exactly one reading escapes."""
    proj = str(tree.proj)
    physical = os.path.realpath(os.path.join(proj, "away/../secret"))
    lexical = os.path.realpath(os.path.normpath(os.path.join(proj, "away/../secret")))
    assert physical == str(tree.outside / "deep/secret")
    assert lexical == str(tree.proj / "secret")
    physical = os.path.realpath(os.path.join(proj, "up/../../outside"))
    lexical = os.path.realpath(os.path.normpath(os.path.join(proj, "up/../../outside")))
    assert physical == str(tree.proj / "sub/outside")
    assert lexical == str(tree.outside)


@pytest.mark.parametrize(
    ("value", "home_in_project"),
    [("~/a", True), ("~", True), ("~/a", False)],
    ids=["tilde-slash-home-inside", "tilde-home-inside", "tilde-slash-home-outside"],
)
def test_tilde_follows_home(
    tree: Tree, monkeypatch: pytest.MonkeyPatch, value: str, home_in_project: bool
) -> None:
    """~ is expanded with $HOME: inside only when HOME is inside (not refused blindly)."""
    monkeypatch.setenv("HOME", str(tree.proj / "sub" if home_in_project else tree.home))
    assert (tree.within(value) is None) is home_in_project


def test_relative_path_uses_cwd(tree: Tree) -> None:
    roots = [str(tree.proj)]
    assert path_within("b", roots, cwd=str(tree.proj / "sub/a"), resolve=os.path.realpath) is None
    reason = path_within("secret", roots, cwd=str(tree.outside), resolve=os.path.realpath)
    assert reason is not None


def test_root_behind_a_symlink(tree: Tree) -> None:
    """A root given through a symlink is compared in its resolved form."""
    link = tree.base / "proj_link"
    link.symlink_to("proj")
    roots = [str(link)]
    inside = path_within(str(link / "file.txt"), roots, cwd="/", resolve=os.path.realpath)
    assert inside is None
    assert path_within(str(tree.outside), roots, cwd="/", resolve=os.path.realpath) is not None


def test_any_of_several_roots(tree: Tree) -> None:
    roots = [str(tree.proj / "sub"), str(tree.outside)]
    for value in ("sub/a", "out_link/secret", str(tree.outside / "deep")):
        assert path_within(value, roots, cwd=str(tree.proj), resolve=os.path.realpath) is None
    assert path_within("file.txt", roots, cwd=str(tree.proj), resolve=os.path.realpath)


@pytest.mark.parametrize(
    "value",
    ["file://{proj}/a%00b", "file://{proj}/%00/../../../etc/passwd"],
    ids=["encoded-nul", "encoded-nul-dotdot"],
)
def test_path_within_refuses_encoded_nul(tree: Tree, value: str) -> None:
    """Regression: the NUL check once ran before a file: URI was percent-decoded, so
    "%00" reached os.path.realpath, which raised ValueError("embedded null byte") into
    the relay instead of refusing."""
    reason = tree.within(_fill(value, tree))
    assert reason is not None
    assert "NUL" in reason


# --- constraints from a profile ----------------------------------------------------------


def _constraint(spec: str, project: str = "/srv/proj") -> Constraint:
    text = f'version = 1\n[tools.t]\nclass = "read"\n[tools.t.args]\nx = {spec}\n'
    places = Placeholders(project=project, home="/home/u", cwd=project, state="/var/state")
    profile = parse_profile(text, source="<test>", places=places)
    return profile.tools["t"].args["x"]


def _check(value: object, spec: str, project: str = "/srv/proj") -> str | None:
    return check_value(value, _constraint(spec, project), cwd=project, resolve=os.path.realpath)


BIG_INT = 10**400  # a JSON integer literal Python parses exactly; too large for a float

VALUE_CASES = [
    # one_of: type-strict
    ("one_of", "{ one_of = [1, 2] }", 1, True),
    ("one_of", "{ one_of = [1, 2] }", 2, True),
    ("one_of", "{ one_of = [1, 2] }", True, False),
    ("one_of", "{ one_of = [1, 2] }", 1.0, False),
    ("one_of", "{ one_of = [1, 2] }", "1", False),
    ("one_of", "{ one_of = [1, 2] }", 3, False),
    ("one_of", "{ one_of = [1, 2] }", None, False),
    ("one_of", "{ one_of = [true] }", True, True),
    ("one_of", "{ one_of = [true] }", 1, False),
    ("one_of", "{ one_of = [false] }", 0, False),
    ("one_of", '{ one_of = ["1", "a"] }', "a", True),
    ("one_of", '{ one_of = ["1", "a"] }', 1, False),
    ("one_of", '{ one_of = ["1", "a"] }', "A", False),
    ("one_of", '{ one_of = ["1", "a"] }', {"a": 1}, False),
    ("one_of", "{ one_of = [1.5] }", 1.5, True),
    # pattern: fullmatch, not search or match
    ("pattern", '{ pattern = "[a-z]+" }', "abc", True),
    ("pattern", '{ pattern = "[a-z]+" }', "abc1", False),
    ("pattern", '{ pattern = "[a-z]+" }', "1abc", False),
    ("pattern", '{ pattern = "[a-z]+" }', "abc\n", False),
    ("pattern", '{ pattern = "[a-z]+" }', "", False),
    ("pattern", '{ pattern = "[a-z]+" }', 5, False),
    ("pattern", '{ pattern = "ab|cd" }', "abcd", False),
    ("pattern", '{ pattern = "ab|cd" }', "cd", True),
    # max_length counts code points
    ("max_length", "{ max_length = 3 }", "abc", True),
    ("max_length", "{ max_length = 3 }", "abcd", False),
    ("max_length", "{ max_length = 3 }", "日本語", True),
    ("max_length", "{ max_length = 3 }", "", True),
    ("max_length", "{ max_length = 0 }", "", True),
    ("max_length", "{ max_length = 0 }", "a", False),
    ("max_length", "{ max_length = 3 }", 12345, False),
    ("max_length", "{ max_length = 3 }", ["ab", "cd"], True),
    # min / max: finite numbers only
    ("range", "{ min = 0, max = 10 }", 0, True),
    ("range", "{ min = 0, max = 10 }", 10, True),
    ("range", "{ min = 0, max = 10 }", 10.0, True),
    ("range", "{ min = 0, max = 10 }", 5.5, True),
    ("range", "{ min = 0, max = 10 }", -1, False),
    ("range", "{ min = 0, max = 10 }", 10.000001, False),
    ("range", "{ min = 0, max = 10 }", 11, False),
    ("range", "{ min = 0, max = 10 }", True, False),
    ("range", "{ min = 0, max = 10 }", False, False),
    ("range", "{ min = 0, max = 10 }", math.nan, False),
    ("range", "{ min = 0, max = 10 }", math.inf, False),
    ("range", "{ min = 0, max = 10 }", -math.inf, False),
    ("range", "{ min = 0, max = 10 }", "5", False),
    ("range", "{ min = 0, max = 10 }", None, False),
    ("range", "{ max = 10 }", -(10**9), True),
    ("range", "{ min = 0 }", 10**9, True),
    ("range", "{ min = 0.5 }", 0.4, False),
    # arrays: every element
    ("array", "{ one_of = [1, 2] }", [1, 2, 2], True),
    ("array", "{ one_of = [1, 2] }", [1, 3], False),
    ("array", "{ one_of = [1, 2] }", [[1], [2, [3]]], False),
    ("array", "{ max = 10 }", [1, 2, math.nan], False),
    ("array", '{ pattern = "[a-z]+" }', ["ok", "no!"], False),
    # wrong types for string kinds
    ("types", '{ hosts = ["example.com"] }', 443, False),
    ("types", '{ hosts = ["example.com"] }', {"url": "https://example.com"}, False),
    ("types", '{ within = ["{project}"] }', 1, False),
    ("types", '{ within = ["{project}"] }', None, False),
    ("types", '{ within = ["{project}"] }', {"path": "."}, False),
    # several kinds at once: every one applies
    ("combined", '{ pattern = "[a-z]+", max_length = 3 }', "abcd", False),
    ("combined", '{ pattern = "[a-z]+", max_length = 3 }', "ab1", False),
    ("combined", '{ pattern = "[a-z]+", max_length = 3 }', "abc", True),
    (
        "combined",
        '{ one_of = ["https://a.example.com/"], hosts = ["b.example.com"] }',
        "https://a.example.com/",
        False,
    ),
]


@pytest.mark.parametrize(
    ("spec", "value", "passes"),
    [(s, v, p) for _, s, v, p in VALUE_CASES],
    ids=[f"{k}-{s}-{v!r}"[:60] for k, s, v, _ in VALUE_CASES],
)
def test_check_value(spec: str, value: object, passes: bool) -> None:
    reason = _check(value, spec)
    assert (reason is None) is passes, reason


@pytest.mark.parametrize(
    ("spec", "value", "words"),
    [
        ("{ one_of = [1, 2] }", True, "is not one of"),
        ('{ pattern = "[a-z]+" }', "abc1", "does not match"),
        ('{ pattern = "[a-z]+" }', 1, "expected a string, got a number"),
        ("{ max_length = 3 }", "abcd", "length 4 is over the limit of 3"),
        ("{ min = 0, max = 10 }", -1, "below the minimum 0"),
        ("{ min = 0, max = 10 }", 11, "above the maximum 10"),
        ("{ min = 0, max = 10 }", True, "expected a finite number, got a boolean"),
        ("{ min = 0, max = 10 }", "5", "expected a finite number, got a string"),
        ("{ one_of = [1, 2] }", [1, 3], "item 1: "),
        ('{ within = ["{project}"] }', {"p": 1}, "expected a path string, got an object"),
        ('{ hosts = ["example.com"] }', [1], "item 0: expected a URL string, got a number"),
    ],
    ids=[
        "one_of",
        "pattern",
        "pattern-type",
        "max_length",
        "min",
        "max",
        "bool",
        "string-number",
        "array-index",
        "within-object",
        "hosts-array",
    ],
)
def test_check_value_reasons(spec: str, value: object, words: str) -> None:
    reason = _check(value, spec)
    assert reason is not None
    assert words in reason


@pytest.mark.parametrize(
    ("spec", "value"),
    [("{ max = 10 }", BIG_INT), ("{ min = 0 }", -BIG_INT), ("{ min = 0, max = 10 }", [1, BIG_INT])],
    ids=["huge-over-max", "huge-under-min", "huge-in-array"],
)
def test_range_refuses_huge_integers(spec: str, value: object) -> None:
    """Regression: math.isfinite(10**400) raises OverflowError, and json.loads turns a
    401-digit literal into exactly that int: one tools/call argument crashed the check
    instead of being refused."""
    reason = _check(value, spec)
    assert reason is not None


@pytest.mark.parametrize(
    ("value", "passes"),
    [
        (["file.txt", "sub/a"], True),
        ([], True),
        (["file.txt", "../outside/secret"], False),
        (["file.txt", ["sub", "out_link"]], False),
        (["file.txt", 5], False),
    ],
    ids=["all-inside", "empty", "one-escapes", "nested-escapes", "one-not-a-string"],
)
def test_within_on_arrays(tree: Tree, value: list[object], passes: bool) -> None:
    reason = _check(value, '{ within = ["{project}"] }', project=str(tree.proj))
    assert (reason is None) is passes, reason


def test_within_from_profile_is_relative_to_project(tree: Tree) -> None:
    spec = '{ within = ["sub"] }'
    assert _check("sub/a", spec, project=str(tree.proj)) is None
    assert _check("file.txt", spec, project=str(tree.proj)) is not None


# --- URLs --------------------------------------------------------------------------------

HOSTS = ["docs.example.com", "*.example.net", "xn--bcher-kva.example", "127.0.0.1", "::1"]

URL_ALLOWED = [
    ("https://docs.example.com/x?y=1#z", "https"),
    ("http://docs.example.com:8080/", "http-port"),
    ("ws://docs.example.com/", "ws"),
    ("wss://docs.example.com/", "wss"),
    ("HTTPS://DOCS.EXAMPLE.COM/", "uppercase"),
    ("https://docs.example.com./", "trailing-dot"),
    ("https://user:pw@docs.example.com/", "userinfo"),
    ("https://a.example.net/", "wildcard-sub"),
    ("https://a.b.example.net/", "wildcard-deep"),
    ("https://bücher.example/", "idna-unicode"),
    ("https://BÜCHER.example/", "idna-unicode-upper"),
    ("https://xn--bcher-kva.example/", "idna-punycode"),
    ("http://127.0.0.1:8000/", "ipv4-listed"),
    ("http://[::1]:8080/", "ipv6-listed"),
    ("https://docs\u3002example\u3002com/", "ideographic-full-stop"),
]

URL_REFUSED = [
    ("https://example.net/", "wildcard-not-bare"),
    ("https://evil-example.net/", "wildcard-suffix-only"),
    ("https://docs.example.com.evil.test/", "suffix-domain"),
    ("https://docs.example.com\u3002evil.test/", "suffix-via-ideographic-stop"),
    ("https://docs.example.com@evil.test/", "userinfo-trick"),
    ("https://docs.example.com:443@evil.test/", "userinfo-port-trick"),
    ("https://evil.test\\@docs.example.com/", "backslash-trick"),
    ("https://evil.test\\.docs.example.com/", "backslash-host"),
    ("https://evil.test#@docs.example.com/", "fragment-trick"),
    ("https://evil.test?@docs.example.com/", "query-trick"),
    ("https://evil.test\t.docs.example.com/", "tab"),
    ("https://docs.example.com\n.evil.test/", "newline"),
    ("https://docs.example.com\r/", "cr"),
    ("https://docs.example.com /", "space"),
    (" https://docs.example.com/", "leading-space"),
    ("https://docs.example.com/\x00", "nul"),
    ("https://docs.example.com/\x7f", "del"),
    ("https://docs%2eexample.com/", "percent-dot"),
    ("https://%64ocs.example.com/", "percent-letter"),
    ("https://docs.example.com:99999/", "port-too-big"),
    ("https://docs.example.com:-1/", "port-negative"),
    ("https://docs.example.com:abc/", "port-not-a-number"),
    ("https://bucher.example/", "idna-lookalike"),
    ("https://evil.test\uff03.docs.example.com/", "nfkc-hash"),
    ("javascript:alert(1)//docs.example.com", "javascript"),
    ("file:///etc/passwd", "file"),
    ("file://docs.example.com/x", "file-host"),
    ("ftp://docs.example.com/", "ftp"),
    ("data:text/html,docs.example.com", "data"),
    ("gopher://docs.example.com/", "gopher"),
    ("docs.example.com", "no-scheme"),
    ("//docs.example.com/", "scheme-relative"),
    ("https:docs.example.com", "no-slashes"),
    ("https:///docs.example.com", "three-slashes"),
    ("https://", "no-host"),
    ("", "empty"),
    ("http://127.0.0.2/", "other-ipv4"),
    ("http://2130706433/", "ipv4-decimal"),
    ("http://0x7f.0.0.1/", "ipv4-hex"),
    ("http://127.1/", "ipv4-short"),
    ("http://[::2]/", "other-ipv6"),
    ("http://[::ffff:127.0.0.1]/", "ipv4-mapped-ipv6"),
    ("http://[fe80::1%25eth0]/", "ipv6-zone"),
]


@pytest.mark.parametrize("url", [u for u, _ in URL_ALLOWED], ids=[i for _, i in URL_ALLOWED])
def test_url_allowed(url: str) -> None:
    assert url_host_allowed(url, HOSTS) is None


@pytest.mark.parametrize("url", [u for u, _ in URL_REFUSED], ids=[i for _, i in URL_REFUSED])
def test_url_refused(url: str) -> None:
    assert url_host_allowed(url, HOSTS) is not None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://[::1]/", "http://[::1]:443/", "http://10.0.0.1/"],
    ids=["ipv4", "ipv6", "ipv6-port", "private-ipv4"],
)
def test_ip_literals_only_when_listed(url: str) -> None:
    assert url_host_allowed(url, ["example.com", "*.example.com"]) is not None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://a\\b/", "backslash"),
        ("https://docs.example.com:x/", "not a valid URL"),
        ("ftp://docs.example.com/", "not an http, https, ws or wss URL"),
        ("https://docs%2eexample.com/", "no valid host"),
        ("https://evil.test/", "host 'evil.test' is not in"),
    ],
    ids=["forbidden-char", "bad-port", "scheme", "bad-host", "not-listed"],
)
def test_url_reasons(url: str, words: str) -> None:
    reason = url_host_allowed(url, HOSTS)
    assert reason is not None
    assert words in reason


@pytest.mark.parametrize(
    ("spec", "url", "passes"),
    [
        ('{ hosts = ["bücher.example"] }', "https://xn--bcher-kva.example/", True),
        ('{ hosts = ["BÜCHER.example"] }', "https://bücher.example/", True),
        ('{ hosts = ["Docs.Example.COM."] }', "https://docs.example.com/", True),
        ('{ hosts = ["*.example.com"] }', "https://example.com/", False),
        ('{ hosts = ["*.example.com"] }', "https://a.example.com/", True),
        ('{ hosts = ["127.0.0.1"] }', "http://127.0.0.1:8080/", True),
    ],
    ids=["unicode-pattern", "upper-unicode-pattern", "mixed-case-dot", "bare", "sub", "ipv4"],
)
def test_hosts_through_the_loader(spec: str, url: str, passes: bool) -> None:
    assert (_check(url, spec) is None) is passes


@pytest.mark.parametrize(
    ("url", "listed"),
    [("https://faß.example/", "fass.example"), ("https://σς.example/", "xn--4xaa.example")],
    ids=["sharp-s", "final-sigma"],
)
def test_idna_deviation_characters_are_not_folded(url: str, listed: str) -> None:
    """Regression (hostnames.to_ascii): Python's "idna" codec is IDNA 2003, which folds
    ß to "ss" and ς to σ. WHATWG URL
    parsers (Node: `new URL("https://faß.example/").hostname` is "xn--fa-hia.example",
    "σς.example" is "xn--3xab.example") and the `idna` package that httpx uses (UTS 46,
    non-transitional) keep them. So a profile allowing "fass.example" passes
    "https://faß.example/" while the server connects to xn--fa-hia.example, another
    registrable name. Such a host is ambiguous and must be refused."""
    assert url_host_allowed(url, [listed]) is not None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("example.com..", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "[::1]"),
        ("", None),
        (".", None),
        ("docs%2eexample.com", None),
        ("a..b", None),
        ("a" * 64 + ".com", None),
    ],
    ids=[
        "plain",
        "upper",
        "trailing-dot",
        "two-trailing-dots",
        "idna",
        "idna-upper",
        "ipv4",
        "ipv6",
        "ipv6-brackets",
        "empty",
        "dot",
        "percent",
        "empty-label",
        "label-too-long",
    ],
)
def test_normalise_host(host: str, expected: str | None) -> None:
    assert normalise_host(host) == expected


@pytest.mark.parametrize(
    ("host", "pattern", "matches"),
    [
        ("example.com", "example.com", True),
        ("a.example.com", "example.com", False),
        ("example.com", "*.example.com", False),
        ("a.example.com", "*.example.com", True),
        ("a.b.example.com", "*.example.com", True),
        ("evilexample.com", "*.example.com", False),
        ("example.com.evil.test", "*.example.com", False),
        (".example.com", "*.example.com", False),
        ("example.com", "*example.com", False),
        ("xexample.com", "example.com", False),
    ],
    ids=[
        "exact",
        "sub-of-exact",
        "bare-vs-wildcard",
        "sub",
        "deep-sub",
        "suffix-no-dot",
        "suffix-domain",
        "empty-label",
        "no-dot-wildcard",
        "prefix",
    ],
)
def test_host_matches(host: str, pattern: str, matches: bool) -> None:
    assert host_matches(host, pattern) is matches
