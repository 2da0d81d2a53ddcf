"""Who may see, use, change or delete an object: the one rule every handler asks.

Every object (run, experiment, dataset, and the kinds to come) has an ``owner``
(a hub user) and a ``group`` ("" when it is its owner's alone).  Its owner and
admins may do anything with it; when it belongs to a group, the group's members
may see and use it (a run may read a group's dataset; a member may push a new
version).  Changing what others rely on (deleting, renaming) is for the owner
and admins.  Whoever may not see an object gets 404, as for one that does not
exist, so no name leaks through an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["see", "use", "add", "change", "delete"]
_MEMBERS_MAY = {"see", "use", "add"}


@dataclass(frozen=True)
class Principal:
    name: str
    groups: frozenset[str] = frozenset()
    admin: bool = False

    @classmethod
    def of(cls, user: dict) -> Principal:
        """From the hub's user model (``current_user``)."""
        return cls(user["name"], frozenset(user.get("groups") or ()), bool(user.get("admin")))


def may(principal: Principal, action: Action, owner: str, group: str = "") -> bool:
    if principal.admin or principal.name == owner:
        return True
    return bool(group) and group in principal.groups and action in _MEMBERS_MAY
