"""What a local run inherits, the limits its booking gives it, and where it may read from."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from services.launcher.platforms.local.containment import (
    DEFAULT_PATH,
    Limits,
    apply_limits,
    find_prlimit,
    limits_for,
    memory_exceeded,
    prlimit_prefix,
    run_environment,
    sandbox_prefix,
)
from services.launcher.platforms.local.locations import (
    LocationRefused,
    LocationRules,
    check_host,
    local_path,
    public_address,
)

THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# -- the environment ------------------------------------------------------------------------------


def test_a_run_inherits_only_the_allow_list() -> None:
    launcher = {
        "PATH": "/opt/bin:/usr/bin",
        "LANG": "C.UTF-8",
        "EB_ADMIN_PASSWORD": "secret",
        "EB_CANFAR_TOKEN": "token",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=x",
        "NATS_URL": "nats://x",
        "PYTHONPATH": "/srv/broker",
        "HOME": "/root",
        "TMPDIR": "/var/tmp",
    }
    env = run_environment(launcher, Path("/work/s1"), THREADS, 3, {"MINE": "1"})
    assert env == {
        "PATH": "/opt/bin:/usr/bin",
        "LANG": "C.UTF-8",
        "HOME": "/work/s1",
        "TMPDIR": "/work/s1/tmp",
        "OMP_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "3",
        "MINE": "1",
    }


def test_the_requests_own_variables_come_last_and_a_path_is_always_set() -> None:
    own = {"OMP_NUM_THREADS": "1", "HOME": "/elsewhere", "EB_MINE": "chosen by the user"}
    env = run_environment({}, Path("/w"), THREADS, 4, own)
    assert env["PATH"] == DEFAULT_PATH
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "4"
    assert env["HOME"] == "/elsewhere" and env["EB_MINE"] == "chosen by the user"


# -- limits ---------------------------------------------------------------------------------------


def test_limits_follow_the_booking() -> None:
    limits = limits_for(4, 2, 90.5, open_files=1024, processes=4096)
    assert limits == Limits(memory_bytes=2 * 2**30, cpu_seconds=362, open_files=1024, processes=4096)


@pytest.mark.parametrize("slot_seconds", [0.0, -30.0, 0.1])
def test_a_slot_at_or_past_its_end_still_gets_a_second_of_cpu(slot_seconds: float) -> None:
    assert limits_for(1, 1, slot_seconds, open_files=64, processes=64).cpu_seconds == 1


def test_apply_limits_sets_them_in_the_child() -> None:
    limits = Limits(memory_bytes=2**30, cpu_seconds=7, open_files=100, processes=4096)
    script = (
        "import resource as r; "
        "print(*(r.getrlimit(k) for k in (r.RLIMIT_DATA, r.RLIMIT_CPU, r.RLIMIT_NOFILE, r.RLIMIT_CORE)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        preexec_fn=lambda: apply_limits(limits),  # as the platform does
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert " ".join(out) == f"({2**30}, {2**30}) (7, 12) (100, 100) (0, 0)"


def test_an_allocation_past_the_limit_fails_in_the_child() -> None:
    limits = Limits(memory_bytes=2**30, cpu_seconds=60, open_files=100, processes=4096)
    run = subprocess.run(
        [sys.executable, "-c", "b = bytearray(2 * 2**30)"],
        preexec_fn=lambda: apply_limits(limits),  # as the platform does
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1 and "MemoryError" in run.stderr
    assert memory_exceeded(run.stderr, None)


@pytest.mark.parametrize(
    ("tail", "signal_name", "expected"),
    [
        ("Traceback ...\nMemoryError", None, True),
        ("terminate called after throwing an instance of 'std::bad_alloc'", "SIGABRT", True),
        ("", "SIGSEGV", True),
        ("malloc: Cannot allocate memory", None, True),
        ("ValueError: nope", None, False),
        ("", "SIGTERM", False),
        ("", None, False),
    ],
)
def test_what_counts_as_hitting_the_memory_limit(tail: str, signal_name: str | None, expected: bool) -> None:
    assert memory_exceeded(tail, signal_name) is expected


def test_the_sandbox_hides_the_brokers_folders_and_binds_the_work_dir_last(tmp_path: Path) -> None:
    data, root = tmp_path / "data", tmp_path / "work"
    work = root / "s1"
    for folder in (data, work):
        folder.mkdir(parents=True)
    argv = sandbox_prefix("/usr/bin/bwrap", work, [root, data, tmp_path / "missing"])
    assert argv[:7] == ["/usr/bin/bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc"]
    tmpfs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--tmpfs"]
    assert sorted(tmpfs) == sorted([str(data), str(root)])  # a missing folder has nothing to hide
    assert argv.index("--bind") > max(i for i, arg in enumerate(argv) if arg == "--tmpfs")
    assert argv[argv.index("--bind") + 1 : argv.index("--bind") + 3] == [str(work), str(work)]
    assert "--unshare-pid" in argv and "--die-with-parent" not in argv and argv[-1] == "--"


# -- local paths ----------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> tuple[LocationRules, Path]:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "nb.ipynb").write_text("{}")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "keys").write_text("seed")
    data = allowed / "broker-data"
    data.mkdir()
    (allowed / "escape").symlink_to(secret)
    (allowed / "to-data").symlink_to(data)
    return LocationRules.of([allowed], [], [data]), tmp_path


def test_a_path_inside_an_allowed_folder_is_read_as_its_real_path(tree: tuple[LocationRules, Path]) -> None:
    rules, root = tree
    expected = root / "allowed" / "sub" / "nb.ipynb"
    assert local_path(str(expected), rules, "the notebook") == expected.resolve()
    assert local_path(expected.as_uri(), rules, "the notebook") == expected.resolve()
    assert local_path(f"file://localhost{expected}", rules, "the notebook") == expected.resolve()


@pytest.mark.parametrize(
    ("relative", "rule"),
    [
        ("secret/keys", "not inside a folder this pool allows"),
        ("allowed/../secret/keys", "not inside a folder this pool allows"),
        ("allowed/sub/../../secret/keys", "not inside a folder this pool allows"),
        ("allowed/escape/keys", "not inside a folder this pool allows"),  # a link out
        ("allowed/broker-data/offers.sqlite", "inside the broker's own files"),
        ("allowed/to-data/offers.sqlite", "inside the broker's own files"),  # a link into it
        ("allowed", "inside the broker's own files"),  # a folder holding them
    ],
)
def test_paths_escaping_the_allowed_folders_are_refused(
    tree: tuple[LocationRules, Path], relative: str, rule: str
) -> None:
    rules, root = tree
    with pytest.raises(LocationRefused, match=rule):
        local_path(f"{root}/{relative}", rules, "the notebook")


def test_without_allowed_folders_no_path_is_readable(tmp_path: Path) -> None:
    with pytest.raises(LocationRefused, match="not inside a folder this pool allows"):
        local_path(str(tmp_path), LocationRules(), "the data")


@pytest.mark.parametrize("location", ["file://otherhost/etc/passwd", "relative/nb.ipynb", "file:relative"])
def test_file_urls_with_a_host_and_relative_paths_are_refused(location: str) -> None:
    with pytest.raises(LocationRefused):
        local_path(location, LocationRules.of(["/"], [], []), "the notebook")


# -- hosts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
        "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.2.1",
        "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:a00:1::1", "64:ff9b::a00:1",
    ],
)  # fmt: skip
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_public(address: str) -> None:
    assert public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/nb.ipynb",
        "http://localhost/nb.ipynb",
        "https://[::1]/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/data",
        "http://[fe80::1]/x",
    ],
)
async def test_urls_to_internal_hosts_are_refused(url: str) -> None:
    with pytest.raises(LocationRefused, match="internal address"):
        await check_host(url, LocationRules(), "the notebook")


async def test_a_pool_may_allow_an_internal_host_by_name() -> None:
    rules = LocationRules.of([], ["LocalHost", "[::1]", "127.0.0.1"], [])
    for url in ("http://localhost:9/x", "https://[::1]/x", "http://127.0.0.1/x"):
        await check_host(url, rules, "the data")
    with pytest.raises(LocationRefused):
        await check_host("http://10.0.0.5/x", rules, "the data")


@pytest.mark.parametrize("url", ["ftp://example.org/x", "http:///nohost", "gopher://127.0.0.1/"])
async def test_other_schemes_and_hostless_urls_are_refused(url: str) -> None:
    with pytest.raises(LocationRefused):
        await check_host(url, LocationRules(), "the data")


def test_limits_never_exceed_the_current_hard_limit() -> None:
    # Asking for more than the hard limit would fail the exec; the limit is capped instead.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard != resource.RLIM_INFINITY  # Linux caps open files (fs.nr_open)
    limits = Limits(memory_bytes=2**40, cpu_seconds=10, open_files=hard + 1000, processes=64)
    out = subprocess.run(
        [sys.executable, "-c", "import resource as r; print(r.getrlimit(r.RLIMIT_NOFILE))"],
        preexec_fn=lambda: apply_limits(limits),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == f"({hard}, {hard})"


def test_prlimit_sets_the_same_limits_without_forking_the_launcher() -> None:
    prlimit = find_prlimit()
    assert prlimit is not None  # util-linux is part of every Debian system
    limits = Limits(memory_bytes=2**30, cpu_seconds=7, open_files=100, processes=4096)
    script = (
        "import resource as r; "
        "print(*(r.getrlimit(k) for k in (r.RLIMIT_DATA, r.RLIMIT_CPU, r.RLIMIT_NOFILE, r.RLIMIT_CORE)))"
    )
    out = subprocess.run(
        [*prlimit_prefix(prlimit, limits), sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == f"({2**30}, {2**30}) (7, 12) (100, 100) (0, 0)".split()
