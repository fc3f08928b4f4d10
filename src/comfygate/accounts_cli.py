"""Command line for accounts: ``keys``, ``users`` and ``projects``. They work on the database directly (the
operator's tools on the server's machine, no server needed) and are audited with the actor "cli"."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from comfygate.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["add_account_commands"]


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    from comfygate.platform.db import make_engine, make_session_factory, session_scope

    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _guarded(handler: Callable[[Settings, argparse.Namespace], int]) -> Callable[[Settings, argparse.Namespace], int]:
    """A refused change (bad name, unknown user, scope wider than the user's rights) is a message and exit 1."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        from comfygate.platform.errors import PlatformError

        try:
            return handler(settings, args)
        except PlatformError as exc:
            print(f"comfygate: {exc.message}", file=sys.stderr)
            return 1

    return run


def _limits(pairs: list[str]) -> dict[str, Any] | None:
    """``--limit NAME=VALUE`` pairs as the ``limits`` object (checked like the API's)."""
    from comfygate.platform.errors import Unprocessable

    limits: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise Unprocessable(f"--limit {pair!r}: give NAME=VALUE, e.g. runs_per_minute=30")
        try:
            limits[name] = json.loads(raw)
        except json.JSONDecodeError:
            limits[name] = raw  # refused below, naming the limit
    return limits or None


def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.access import keys, members
    from comfygate.platform.access.audit import CLI, record
    from comfygate.platform.access.build import access_for_user
    from comfygate.platform.services import accounts

    scoped = args.user or args.project or args.workflow or args.actions or args.limit
    with _session(settings) as session:
        if not scoped:
            # As before projects existed, for scripts: owned by the first server admin; --admin: unscoped,
            # else run, read and publish everywhere.
            created = accounts.create_api_key(session, args.name, is_admin=args.admin)
            owner_name = None
            scopes, limits = (None if args.admin else accounts.PLAIN_KEY_SCOPES), None
        else:
            owner = members.user_named(session, args.user) if args.user else accounts.first_server_admin(session)
            if owner is None:
                print("comfygate: there is no user to own the key yet: give --user, or start the server once",
                      file=sys.stderr)
                return 1
            if args.admin and not owner.is_admin:
                print(f"comfygate: --admin: user {owner.username!r} is not a server admin", file=sys.stderr)
                return 1
            actions = args.actions.split(",") if args.actions else (
                None if args.admin or args.user else list(accounts.PLAIN_KEY_SCOPES["actions"]))
            raw = {"projects": args.project or None, "workflows": args.workflow or None, "actions": actions}
            scopes = None if all(v is None for v in raw.values()) else keys.check_scopes(
                session, raw, access_for_user(session, owner))
            limits = keys.check_limits(_limits(args.limit))
            created = accounts.issue_key(session, args.name, user_id=owner.id, is_admin=args.admin, scopes=scopes,
                                         limits=limits)
            owner_name = owner.username
        record(session, CLI, "key.create", target=f"{created.name} ({created.prefix})",
               details={"user": owner_name, "admin": created.is_admin, "scopes": scopes, "limits": limits})
    kind = "admin key" if created.is_admin else "key"
    print(f"created {kind} {created.name!r}. Its secret is shown only now:\n{created.secret}")
    return 0


def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from comfygate.platform.access.keys import key_to_dict
    from comfygate.platform.models import ApiKey

    with _session(settings) as session:
        rows = [key_to_dict(session, key) for key in session.scalars(select(ApiKey).order_by(ApiKey.id))]
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        print(f"{row['prefix']}  {row['name']!r}  user={row['user']}  admin={row['admin']}  "
              f"scopes={json.dumps(row['scopes'])}  limits={json.dumps(row['limits'])}  {state}")
    return 0


def _keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.access.audit import CLI
    from comfygate.platform.access.keys import revoke_key

    with _session(settings) as session:
        key = revoke_key(session, None, CLI, args.key)
    # Servers trust a verified key for a few seconds (their key cache), then refuse it.
    print(f"revoked key {key['name']!r} (prefix {key['prefix']})")
    return 0


def _roles(args: argparse.Namespace) -> dict[str, str]:
    from comfygate.platform.errors import Unprocessable

    if len(args.project) != len(args.role):
        raise Unprocessable("give one --role for each --project (--project P --role R, repeated)")
    return dict(zip(args.project, args.role, strict=True))


def _users_create(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.access import members
    from comfygate.platform.access.audit import CLI

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    with _session(settings) as session:
        user, generated = members.add_user(session, CLI, args.name, password, admin=args.admin,
                                           projects=_roles(args))
        roles = members.user_to_dict(session, user)["projects"]
    print(f"created user {args.name!r} (server admin: {args.admin}; roles: {json.dumps(roles)})")
    if generated is not None:
        print(f"Its password is shown only now:\n{generated}")
    return 0


def _users_list(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.access import members

    with _session(settings) as session:
        users = members.list_users(session)
    for user in users:
        print(f"{user['username']}  admin={user['admin']}  projects={json.dumps(user['projects'])}")
    return 0


def _users_set_role(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.access import members
    from comfygate.platform.access.audit import CLI

    with _session(settings) as session:
        members.set_role(session, CLI, args.project, args.name, args.role)
    print(f"{args.name} is {args.role} in project {args.project}")
    return 0


def _users_remove_role(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.access import members
    from comfygate.platform.access.audit import CLI

    with _session(settings) as session:
        members.remove_role(session, CLI, args.project, args.name)
    print(f"{args.name} has no role in project {args.project} any more")
    return 0


def _projects_create(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.access.audit import CLI
    from comfygate.platform.access.projects import create_project

    with _session(settings) as session:
        create_project(session, args.name, CLI)
    print(f"created project {args.name!r}")
    return 0


def _projects_list(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from comfygate.platform.models import Project

    with _session(settings) as session:
        names = session.scalars(select(Project.name).order_by(Project.name)).all()
    print("\n".join(names))
    return 0


def add_account_commands(sub: Any) -> None:
    """``keys``, ``users`` and ``projects`` under the main parser's subcommands."""
    from comfygate.platform.access.rights import ACTIONS, ROLES

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print its secret once (last line)")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true",
                        help="an unscoped key of a server admin (default owner: the first server admin)")
    create.add_argument("--user", help="the user the key acts for (default: the first server admin)")
    create.add_argument("--project", action="append", default=[], help="only this project (repeatable)")
    create.add_argument("--workflow", action="append", default=[], help="only this workflow (repeatable)")
    create.add_argument("--actions", help=f"comma-separated, of {','.join(ACTIONS)}")
    create.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="rate limit or quota of this key: requests_per_second, runs_per_minute, "
                             "concurrent_runs, runs_per_day (0: no limit; repeatable)")
    create.set_defaults(handler=_guarded(_keys_create))
    keys_sub.add_parser("list", help="every key (never its secret)").set_defaults(handler=_guarded(_keys_list))
    revoke = keys_sub.add_parser("revoke", help="revoke a key (give the key or its prefix)")
    revoke.add_argument("key")
    revoke.set_defaults(handler=_guarded(_keys_revoke))

    users = sub.add_parser("users", help="user accounts and their roles in projects")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    ucreate = users_sub.add_parser("create", help="create a user (prints a generated password once)")
    ucreate.add_argument("name")
    ucreate.add_argument("--admin", action="store_true", help="a server admin: every right in every project")
    ucreate.add_argument("--project", action="append", default=[], help="a project ... (with --role, repeatable)")
    ucreate.add_argument("--role", action="append", default=[], choices=ROLES, help="... and the role there")
    ucreate.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    ucreate.set_defaults(handler=_guarded(_users_create))
    users_sub.add_parser("list", help="every user with their roles").set_defaults(handler=_guarded(_users_list))
    set_role = users_sub.add_parser("set-role", help="give a user a role in a project (or change it)")
    set_role.add_argument("name")
    set_role.add_argument("--project", required=True)
    set_role.add_argument("--role", required=True, choices=ROLES)
    set_role.set_defaults(handler=_guarded(_users_set_role))
    remove_role = users_sub.add_parser("remove-role", help="take a user's role in a project away")
    remove_role.add_argument("name")
    remove_role.add_argument("--project", required=True)
    remove_role.set_defaults(handler=_guarded(_users_remove_role))

    projects = sub.add_parser("projects", help="projects (a team's workflows, runs and reviews)")
    projects_sub = projects.add_subparsers(dest="projects_command", required=True)
    pcreate = projects_sub.add_parser("create", help="create a project")
    pcreate.add_argument("name")
    pcreate.set_defaults(handler=_guarded(_projects_create))
    projects_sub.add_parser("list", help="every project").set_defaults(handler=_guarded(_projects_list))
