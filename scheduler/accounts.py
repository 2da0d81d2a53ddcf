"""The one mapping from a JupyterHub user to the Unix account their notebooks and runs execute as.

Both the hub (its spawner starts notebooks) and the scheduler (it starts runs) use
:class:`UnixAccounts` with the same ``c.UnixAccounts.*`` settings, so one hub user
is one Unix account everywhere: files a notebook writes are the run's files, and
nobody else's.  The hub passes its settings to the scheduler on the scheduler's
command line (:func:`config_args`).

Accounts are created on first use, as JupyterHub's
``LocalAuthenticator.create_system_users`` does, or looked up only
(``create=False``) on sites whose accounts come from LDAP/sssd.  A created account
has its own primary group (so shared Unix groups can be added to it later), no
login shell and no home folder made by ``useradd``: the caller makes the folders
the account needs.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import threading
import unicodedata
from dataclasses import dataclass

from traitlets import Bool, Integer, TraitError, Unicode, default, validate
from traitlets.config import Config, LoggingConfigurable

MAX_NAME = 32  # useradd's limit on a login name
SYSTEM_UID_END = 1000  # uids below are the system's own (root is 0): never a hub user's
HASH_CHARS = 8
# What a shortened or changed name ends with; a hub name that already looks like it is hashed too,
# so an unchanged name can never equal the hashed form of another one.
_HASHED = re.compile(rf"-[0-9a-f]{{{HASH_CHARS}}}$")
_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_TEMPLATE_LITERAL = re.compile(r"^[a-z0-9_-]*$")
NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
USERADD_UID_TAKEN = 4  # useradd's exit codes
USERADD_NAME_TAKEN = 9
CREATE_ATTEMPTS = 5

# One lock for every UnixAccounts in the process: two spawners of one user must not both run useradd.
_lock = threading.Lock()


@dataclass(frozen=True)
class Account:
    """A hub user's Unix account, as the passwd database has it."""

    hub_name: str  # the JupyterHub user name
    name: str  # the Unix login
    uid: int
    gid: int  # the account's own primary group
    home: str  # from the passwd entry


class AccountError(Exception):
    """A hub user has no usable Unix account; the message says why, for a person to act on."""


def _nologin_shell() -> str:
    return next((s for s in NOLOGIN_SHELLS if os.path.exists(s)), NOLOGIN_SHELLS[0])


class UnixAccounts(LoggingConfigurable):
    """Maps hub user names to Unix accounts and creates missing ones (blocking; call it off the event loop)."""

    enabled = Bool(
        help="""Run every notebook and run as its user's own Unix account.

        Defaults to True when the service runs as root (only root can start processes
        as other users or create accounts), else False: everything then runs as the
        service's own user, with no isolation between users.
        Example: ``c.UnixAccounts.enabled = False``
        """
    ).tag(config=True)

    @default("enabled")
    def _default_enabled(self) -> bool:
        return os.geteuid() == 0

    create = Bool(
        True,
        help="""Create a missing account on first use (``useradd``), with a uid from ``uid_min``-``uid_max``.

        False for sites whose accounts already exist (LDAP, sssd, a provisioning
        system): a hub user without an account then cannot start anything, and is
        told so; existing accounts are used whatever their uid (but never one below 1000).
        Example: ``c.UnixAccounts.create = False``
        """,
    ).tag(config=True)

    name_template = Unicode(
        "nothing-{username}",
        help="""The Unix login of a hub user; ``{username}`` is the hub name made safe for Unix.

        Made safe means: lower case ASCII, characters other than ``a-z0-9_-`` replaced
        by ``-``, starting with a letter, and the whole login at most 32 characters.
        When anything had to change, or the name was cut, ``-`` and 8 hex characters
        of a hash of the hub name are appended, so two hub names never share an account
        (``Alice@example.org`` becomes ``nothing-alice-example-org-1a2b3c4d``); so does a
        hub name that already ends in ``-`` and 8 hex characters.
        With ``create = False``, ``"{username}"`` maps hub users onto same-named site accounts.
        Example: ``c.UnixAccounts.name_template = "nb-{username}"``
        """,
    ).tag(config=True)

    @validate("name_template")
    def _check_template(self, proposal):
        template = proposal["value"]
        head, sep, tail = template.partition("{username}")
        if not sep or "{username}" in tail or not _TEMPLATE_LITERAL.match(head + tail):
            raise TraitError(f"UnixAccounts.name_template must contain {{username}} once and otherwise only "
                             f"a-z, 0-9, _ and -, not {template!r}")
        if head and not head[0].isalpha():
            raise TraitError(f"UnixAccounts.name_template must start with a letter or {{username}}: {template!r}")
        if MAX_NAME - len(head + tail) < HASH_CHARS + 2:
            raise TraitError(f"UnixAccounts.name_template {template!r} leaves too little room for a user name "
                             f"in {MAX_NAME} characters")
        return template

    uid_min = Integer(
        20000,
        help="""Lowest uid given to a created account (at least 1000, below it are system accounts).

        With ``create = True`` an existing account outside ``uid_min``-``uid_max`` is
        refused rather than taken over: it was not made for a hub user.
        Example: ``c.UnixAccounts.uid_min = 50000``
        """,
    ).tag(config=True)

    uid_max = Integer(
        29999,
        help="""Highest uid given to a created account. Example: ``c.UnixAccounts.uid_max = 59999``""",
    ).tag(config=True)

    @validate("uid_min", "uid_max")
    def _check_uid(self, proposal):
        if proposal["value"] < SYSTEM_UID_END:
            raise TraitError(f"UnixAccounts.{proposal['trait'].name} must be at least {SYSTEM_UID_END}, "
                             f"not {proposal['value']}")
        return proposal["value"]

    home_template = Unicode(
        "/home/{name}",
        help="""Home folder written into the passwd entry of a created account (never created by ``useradd``).

        ``{name}`` is the Unix login, ``{username}`` the hub name as it is. Callers
        that know the folder (the local spawner: the user's persistent folder) pass it
        instead; set this to the same path so an account the scheduler creates first
        gets the same home.
        Example: ``c.UnixAccounts.home_template = "/srv/nothing/users/{username}"``
        """,
    ).tag(config=True)

    def unix_name(self, hub_name: str) -> str:
        """The Unix login for ``hub_name`` (pure: no lookups), following ``name_template``."""
        head, _, tail = self.name_template.partition("{username}")
        room = MAX_NAME - len(head) - len(tail)
        folded = unicodedata.normalize("NFKD", hub_name).encode("ascii", "ignore").decode().lower()
        slug = _UNSAFE.sub("-", folded).strip("-")
        if not slug[:1].isalpha():
            slug = "u" + slug
        if slug != hub_name or len(slug) > room or _HASHED.search(slug):
            digest = hashlib.sha256(hub_name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
            slug = slug[: room - HASH_CHARS - 1].rstrip("-") + "-" + digest
        return head + slug + tail

    def account(self, hub_name: str, home: str | None = None) -> Account:
        """The account of ``hub_name``, created first when it is missing and ``create`` is on.

        ``home`` is the home folder of a created account (default: ``home_template``);
        an existing account keeps its own. Blocking (passwd lookups, ``useradd``) and
        thread-safe. Raises :class:`AccountError` when accounts are off, when the
        account is missing and may not be created, when it is a system account
        (uid < 1000) or, with ``create`` on, one outside the uid range, when the
        range is full, or when ``useradd`` fails.
        """
        if not self.enabled:
            raise AccountError("Unix accounts are turned off (UnixAccounts.enabled is False): "
                               "everything runs as the service's own user")
        name = self.unix_name(hub_name)
        with _lock:
            found = self._lookup(hub_name, name)
            if found is not None:
                return found
            if not self.create:
                raise AccountError(f"There is no Unix account {name!r} for hub user {hub_name!r}, and "
                                   "accounts are not created here (UnixAccounts.create is False): "
                                   "ask an administrator to create it")
            if home is None:
                home = self.home_template.format(name=name, username=hub_name)
            return self._create(hub_name, name, home)

    def _lookup(self, hub_name: str, name: str) -> Account | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        if entry.pw_uid < SYSTEM_UID_END:
            raise AccountError(f"Hub user {hub_name!r} maps to {name!r}, a system account (uid {entry.pw_uid}); "
                               "it is never used for a hub user")
        if self.create and not self.uid_min <= entry.pw_uid <= self.uid_max:
            raise AccountError(f"Hub user {hub_name!r} maps to the existing account {name!r} (uid {entry.pw_uid}), "
                               f"outside UnixAccounts.uid_min-uid_max ({self.uid_min}-{self.uid_max}), so it was "
                               "not made for a hub user and is not taken over")
        return Account(hub_name, name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def _free_uids(self) -> list[int]:
        """Uids of the range that no account uses, nor any group as its gid (so the own group gets gid == uid)."""
        taken = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
        return [uid for uid in range(self.uid_min, self.uid_max + 1) if uid not in taken]

    def _create(self, hub_name: str, name: str, home: str) -> Account:
        if not os.path.isabs(home) or any(c in home for c in ":\n"):
            raise AccountError(f"Cannot create {name!r} for hub user {hub_name!r}: its home {home!r} must be "
                               "an absolute path without ':' or a line break")
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        comment = re.sub(r"[^A-Za-z0-9@._ -]", "?", f"NothingAI user {hub_name}")[:100]
        candidates = self._free_uids()
        for uid in candidates[:CREATE_ATTEMPTS]:
            cmd = [useradd, "--no-create-home", "--home-dir", home, "--shell", _nologin_shell(),
                   "--user-group", "--uid", str(uid), "--no-log-init", "--comment", comment, name]
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise AccountError(f"Cannot create the Unix account {name!r} for hub user {hub_name!r}: {e}") from None
            if proc.returncode == USERADD_UID_TAKEN:
                continue  # taken since we looked (another process): try the next free uid
            if proc.returncode == USERADD_NAME_TAKEN:
                found = self._lookup(hub_name, name)  # the scheduler or the hub created it meanwhile
                if found is not None:
                    return found
            if proc.returncode:
                raise AccountError(f"Cannot create the Unix account {name!r} for hub user {hub_name!r}: "
                                   f"useradd said: {proc.stderr.strip() or proc.returncode}")
            account = self._lookup(hub_name, name)
            if account is None:
                raise AccountError(f"useradd created {name!r} but the passwd database does not show it")
            self.log.info("Created Unix account %s (uid %d) for hub user %s", name, account.uid, hub_name)
            return account
        if not candidates:
            raise AccountError(f"Cannot create a Unix account for hub user {hub_name!r}: every uid of "
                               f"UnixAccounts.uid_min-uid_max ({self.uid_min}-{self.uid_max}) is taken")
        raise AccountError(f"Cannot create the Unix account {name!r} for hub user {hub_name!r}: "
                           f"{CREATE_ATTEMPTS} free uids were taken while trying")


def config_args(config: Config) -> list[str]:
    """``--UnixAccounts.key=value`` arguments that give another process the ``c.UnixAccounts`` settings of ``config``.

    The hub uses it to start the scheduler with the same mapping as its spawner.
    """
    section = config.UnixAccounts if "UnixAccounts" in config else {}
    return [f"--UnixAccounts.{key}={value}" for key, value in sorted(section.items())]
