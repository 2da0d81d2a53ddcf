"""Hub users map onto Unix accounts: the name mapping (pure) and real accounts made with useradd.

The accounts made here use a template (``ntest-``) and uid range (43000-43999) of
their own and are deleted by the fixture, whatever the test did.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import subprocess
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from traitlets import TraitError
from traitlets.config import Application, Config

from nothing.scheduler.accounts import AccountError, UnixAccounts, config_args

from .hub import remove_accounts

PREFIX = "ntest-"
UID_MIN, UID_MAX = 43000, 43999
LOGIN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

needs_root = pytest.mark.usefixtures("running_as_root")


@pytest.fixture
def running_as_root():
    """Creating accounts needs root; the platform's machines and CI have it, so its absence fails, not skips."""
    assert os.geteuid() == 0, "creating accounts needs root"


def mapping(**kwargs) -> UnixAccounts:
    return UnixAccounts(name_template=PREFIX + "{username}", uid_min=UID_MIN, uid_max=UID_MAX, **kwargs)


@pytest.fixture
def accounts():
    """A UnixAccounts on the test range; every ``ntest-`` account is deleted afterwards."""
    yield mapping(enabled=True)
    remove_accounts(PREFIX)


def fresh(prefix: str = "u") -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def useradd(name: str, uid: int) -> None:
    subprocess.run(["useradd", "-M", "-U", "-s", "/usr/sbin/nologin", "-u", str(uid), name], check=True)


# ---- the mapping -------------------------------------------------------------------------


def test_a_unix_safe_hub_name_keeps_its_name():
    m = mapping()
    assert m.unix_name("alice") == "ntest-alice"
    assert m.unix_name("bob_smith-2") == "ntest-bob_smith-2"


@pytest.mark.parametrize("hub_name,start", [
    ("Alice", "ntest-alice-"),
    ("alice.smith", "ntest-alice-smith-"),
    ("alice@example.org", "ntest-alice-example-org-"),
    ("José", "ntest-jose-"),
    ("日本語", "ntest-u-"),
    ("1st", "ntest-u1st-"),
    ("-dash-", "ntest-dash-"),
])
def test_a_changed_name_gets_a_hash_of_the_hub_name(hub_name, start):
    name = mapping().unix_name(hub_name)
    assert name.startswith(start) and re.fullmatch(re.escape(start) + "[0-9a-f]{8}", name), name


def test_names_that_only_differ_in_what_was_changed_stay_apart():
    m = mapping()
    names = ["alice.smith", "alice@smith", "alice-smith", "Alice-Smith", "alice smith", "alice_smith"]
    assert len({m.unix_name(n) for n in names}) == len(names)


def test_a_long_name_is_cut_to_32_characters_and_stays_apart_from_its_neighbours():
    m = mapping()
    a, b = "a" * 40 + "x", "a" * 40 + "y"
    assert len(m.unix_name(a)) == 32 and len(m.unix_name(b)) == 32
    assert m.unix_name(a) != m.unix_name(b)
    assert m.unix_name("a" * 26) == "ntest-" + "a" * 26  # exactly 32: not cut


def test_a_hub_name_that_looks_hashed_never_takes_the_hashed_name_of_another():
    m = mapping()
    hashed = m.unix_name("Alice")  # ntest-alice-<hash>
    look_alike = hashed.removeprefix(PREFIX)
    assert m.unix_name(look_alike) != hashed


def test_root_maps_to_a_prefixed_login_not_to_root():
    assert mapping().unix_name("root") == "ntest-root"


@given(st.text(min_size=1, max_size=60))
def test_every_hub_name_maps_to_a_valid_login(hub_name):
    assert LOGIN.match(mapping().unix_name(hub_name))


@given(st.sets(st.text(alphabet="aA.-_@é1 ", min_size=1, max_size=40), min_size=2, max_size=40))
def test_different_hub_names_never_share_a_login(hub_names):
    m = mapping()
    assert len({m.unix_name(n) for n in hub_names}) == len(hub_names)


@pytest.mark.parametrize("template", ["nothing", "{username}-{username}", "No-{username}", "1-{username}",
                                      "a.b-{username}", "x" * 23 + "{username}"])
def test_templates_that_cannot_give_valid_logins_are_refused(template):
    with pytest.raises(TraitError):
        UnixAccounts(name_template=template)


def test_system_uids_cannot_be_the_range():
    with pytest.raises(TraitError):
        UnixAccounts(uid_min=999)


def test_the_scheduler_gets_the_hubs_settings_from_its_command_line():
    hub_config = Config()
    hub_config.UnixAccounts.name_template = "site-{username}"
    hub_config.UnixAccounts.uid_min = 50000
    hub_config.UnixAccounts.create = False
    hub_config.UnixAccounts.home_template = "/srv/users/{username}"
    app = Application()
    app.parse_command_line(config_args(hub_config))
    scheduler_side, hub_side = UnixAccounts(config=app.config), UnixAccounts(config=hub_config)
    for trait in ("name_template", "uid_min", "uid_max", "create", "home_template", "enabled"):
        assert getattr(scheduler_side, trait) == getattr(hub_side, trait)
    assert scheduler_side.unix_name("Alice@x") == hub_side.unix_name("Alice@x") == "site-alice-x-" + \
        hub_side.unix_name("Alice@x").rsplit("-", 1)[1]


# ---- real accounts ------------------------------------------------------------------------


@needs_root
def test_a_missing_account_is_created_in_the_range_with_its_own_group(accounts, tmp_path):
    hub_name = fresh("New.")
    home = tmp_path / "home-of-new"
    account = accounts.account(hub_name, home=str(home))

    entry = pwd.getpwnam(account.name)
    assert account.name == accounts.unix_name(hub_name) and account.hub_name == hub_name
    assert UID_MIN <= account.uid <= UID_MAX and entry.pw_uid == account.uid
    assert grp.getgrgid(account.gid).gr_name == account.name  # its own primary group
    assert entry.pw_shell.endswith("nologin")
    assert account.home == entry.pw_dir == str(home) and not home.exists()  # useradd made no folder


@needs_root
def test_the_home_of_a_created_account_follows_the_template_when_none_is_given(accounts):
    accounts.home_template = "/srv/nothing-tests/{username}/{name}"
    account = accounts.account("hometpl")
    assert account.home == f"/srv/nothing-tests/hometpl/{PREFIX}hometpl"


@needs_root
def test_the_second_call_finds_the_same_account(accounts):
    hub_name = fresh()
    first = accounts.account(hub_name)
    assert accounts.account(hub_name) == first
    assert mapping(enabled=True).account(hub_name) == first  # another instance, same answer


@needs_root
def test_concurrent_first_calls_create_one_account(accounts):
    hub_name = fresh()
    results, errors = [], []

    def call():
        try:
            results.append(accounts.account(hub_name))
        except AccountError as e:
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 4 and len(set(results)) == 1
    assert sum(p.pw_name == results[0].name for p in pwd.getpwall()) == 1


@needs_root
def test_two_hub_users_get_two_uids(accounts):
    assert accounts.account(fresh()).uid != accounts.account(fresh()).uid


@needs_root
def test_a_missing_account_is_an_error_when_creating_is_off(accounts):
    accounts.create = False
    hub_name = fresh()
    with pytest.raises(AccountError, match=r"no Unix account .*\(UnixAccounts.create is False\)"):
        accounts.account(hub_name)
    with pytest.raises(KeyError):
        pwd.getpwnam(accounts.unix_name(hub_name))


@needs_root
def test_an_existing_account_outside_the_range_is_not_taken_over_unless_creating_is_off(accounts):
    hub_name = fresh()
    useradd(accounts.unix_name(hub_name), UID_MAX - 10)
    accounts.uid_max = UID_MAX - 100  # the account's uid now lies above the range
    with pytest.raises(AccountError, match="outside UnixAccounts.uid_min-uid_max"):
        accounts.account(hub_name)
    accounts.create = False  # a site's own accounts: any uid from 1000 up
    assert accounts.account(hub_name).uid == pwd.getpwnam(accounts.unix_name(hub_name)).pw_uid


@needs_root
@pytest.mark.parametrize("create", [True, False])
@pytest.mark.parametrize("hub_name", ["root", "daemon"])
def test_a_hub_user_never_gets_a_system_account(hub_name, create):
    same_names = UnixAccounts(enabled=True, name_template="{username}", create=create)
    with pytest.raises(AccountError, match="system account"):
        same_names.account(hub_name)


@needs_root
def test_a_full_range_is_an_error_that_says_so(accounts):
    useradd(f"{PREFIX}{fresh('full')}", UID_MAX)
    accounts.uid_min = UID_MAX
    with pytest.raises(AccountError, match=f"every uid of .*{UID_MAX}-{UID_MAX}.* is taken"):
        accounts.account(fresh())


def test_accounts_that_are_off_give_no_account():
    with pytest.raises(AccountError, match="turned off"):
        mapping(enabled=False).account("alice")
