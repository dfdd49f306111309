"""The `mplus` command: run the service and the gateway, migrate, manage accounts and senders."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence

from server import bootstrap, gateway
from server.api.server import serve
from server.config import Settings
from server.delivery.runner import run_dispatcher
from server.domain.errors import DomainError
from server.errors import StartupError
from server.json_logs import log_json_lines
from server.service import accounts, senders
from server.storage.migrate import upgrade
from server.supervisor import Supervisor

DEMO_ACCOUNT = "demo"
DEMO_SENDERS = ("447700900001", "447700900002", "447700900003")


def cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    log_json_lines()  # a server's stderr is read by log collectors: one JSON object a line
    serve(settings)
    return 0


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    """Envoy alone, for a gateway host in front of replicas elsewhere (MPLUS_UPSTREAMS)."""
    if args.validate:
        result = gateway.validate(settings)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode
    log_json_lines()  # like the workers' and Envoy's own: one JSON object a line
    return Supervisor(settings, workers=0).run()


def cmd_dispatch(settings: Settings, _args: argparse.Namespace) -> int:
    log_json_lines()
    run_dispatcher(settings)
    return 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """N gRPC workers, the dispatchers and Envoy in the foreground; SIGTERM or Ctrl-C stops
    them in order."""
    settings = dataclasses.replace(settings, workers=args.workers or settings.workers)
    log_json_lines()  # its lines mix with the workers' and Envoy's: all JSON, one a line
    supervisor = Supervisor(
        settings, workers=settings.workers, dispatchers=settings.delivery.dispatchers
    )
    ports = ", ".join(str(settings.worker_port(i)) for i in range(settings.workers))
    scheme = "https" if settings.tls_cert else "http"
    logging.getLogger("mplus.up").info(
        "gRPC on %s port %s, JSON on %s://%s/message (Ctrl-C stops)",
        settings.grpc_host,
        ports,
        scheme,
        settings.http_address,
    )
    return supervisor.run()


def cmd_db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    logging.getLogger("alembic").setLevel(logging.INFO)  # say which migrations ran
    upgrade(bootstrap.migration_engine(settings))
    print("database schema is up to date")
    return 0


def cmd_accounts_create(settings: Settings, args: argparse.Namespace) -> int:
    account = accounts.create_account(bootstrap.for_cli(settings), args.name)
    if args.json:
        print(
            json.dumps(
                {
                    "id": account.id,
                    "name": account.name,
                    "key": account.key,
                    "webhook_secret": account.webhook_secret,
                }
            )
        )
    else:
        print(f"account {account.name} ({account.id})")
        print(f"API key (shown once, store it now): {account.key}")
        print(f"webhook signing secret: {account.webhook_secret}")
    return 0


def cmd_accounts_secret(settings: Settings, args: argparse.Namespace) -> int:
    print(accounts.webhook_secret(bootstrap.for_cli(settings), args.account, rotate=args.rotate))
    return 0


def cmd_accounts_list(settings: Settings, args: argparse.Namespace) -> int:
    summaries = accounts.list_accounts(bootstrap.for_cli(settings))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": s.id,
                        "name": s.name,
                        "created_at": s.created_at.isoformat(),
                        "active_keys": s.active_keys,
                    }
                    for s in summaries
                ]
            )
        )
        return 0
    for s in summaries:
        print(f"{s.id}  {s.name}  keys={s.active_keys}  created={s.created_at:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    print(accounts.create_key(bootstrap.for_cli(settings), args.account))
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    accounts.revoke_key(bootstrap.for_cli(settings), args.key)
    print("key revoked")
    return 0


def cmd_senders_add(settings: Settings, args: argparse.Namespace) -> int:
    added = senders.add_senders(bootstrap.for_cli(settings), args.numbers)
    print(f"{added} sender(s) added to the shared pool")
    return 0


def cmd_senders_remove(settings: Settings, args: argparse.Namespace) -> int:
    removed = senders.remove_senders(bootstrap.for_cli(settings), args.numbers)
    print(f"{removed} sender(s) removed from the shared pool")
    return 0


def cmd_senders_list(settings: Settings, _args: argparse.Namespace) -> int:
    for number in senders.list_senders(bootstrap.for_cli(settings)):
        print(number)
    return 0


def cmd_demo(settings: Settings, _args: argparse.Namespace) -> int:
    """For `make run`: a demo account and a small shared pool, made once; prints the demo key."""
    unit_of_work = bootstrap.for_cli(settings)
    key_file = settings.state_dir / "demo-key"
    if not accounts.list_accounts(unit_of_work):
        account = accounts.create_account(unit_of_work, DEMO_ACCOUNT)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(account.key + "\n")
    if not senders.list_senders(unit_of_work):
        senders.add_senders(unit_of_work, DEMO_SENDERS)
    if key_file.exists():
        print(f"demo API key: {key_file.read_text().strip()}  (kept in {key_file})")
    else:
        print("accounts exist already; create a key with `mplus keys create ACCOUNT`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mplus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("serve", help="run the gRPC server").set_defaults(run=cmd_serve)
    commands.add_parser(
        "dispatch", help="send due messages and post their delivery receipts"
    ).set_defaults(run=cmd_dispatch)
    gateway_parser = commands.add_parser("gateway", help="run Envoy (JSON POST /message)")
    gateway_parser.add_argument("--validate", action="store_true", help="check the config only")
    gateway_parser.set_defaults(run=cmd_gateway)
    up = commands.add_parser("up", help="run gRPC workers and Envoy in front of them")
    up.add_argument(
        "--workers",
        type=int,
        choices=range(1, 65),
        metavar="N",
        help="gRPC server processes on consecutive ports from MPLUS_GRPC_PORT (default "
        "MPLUS_WORKERS or 1)",
    )
    up.set_defaults(run=cmd_up)
    commands.add_parser(
        "demo", help="create a demo account and shared pool if none exist"
    ).set_defaults(run=cmd_demo)

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True, metavar="COMMAND"
    )
    db.add_parser("upgrade", help="migrate to the latest schema").set_defaults(run=cmd_db_upgrade)

    account_commands = commands.add_parser("accounts", help="accounts").add_subparsers(
        dest="accounts_command", required=True, metavar="COMMAND"
    )
    create = account_commands.add_parser("create", help="create an account and its first key")
    create.add_argument("name")
    create.add_argument(
        "--json", action="store_true", help='print {"id","name","key","webhook_secret"}'
    )
    create.set_defaults(run=cmd_accounts_create)
    secret = account_commands.add_parser(
        "secret", help="print the secret that signs the account's receipt webhooks"
    )
    secret.add_argument("account", help="account id or name")
    secret.add_argument("--rotate", action="store_true", help="replace it first")
    secret.set_defaults(run=cmd_accounts_secret)
    listing = account_commands.add_parser("list", help="list accounts")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_accounts_list)

    key_commands = commands.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND"
    )
    key_create = key_commands.add_parser("create", help="add a key to an account (id or name)")
    key_create.add_argument("account")
    key_create.set_defaults(run=cmd_keys_create)
    key_revoke = key_commands.add_parser("revoke", help="revoke a key at once")
    key_revoke.add_argument("key")
    key_revoke.set_defaults(run=cmd_keys_revoke)

    sender_commands = commands.add_parser("senders", help="the shared sender pool").add_subparsers(
        dest="senders_command", required=True, metavar="COMMAND"
    )
    for name, run, help_text in (
        ("add", cmd_senders_add, "add numbers to the pool"),
        ("remove", cmd_senders_remove, "remove numbers from the pool"),
    ):
        sub = sender_commands.add_parser(name, help=help_text)
        sub.add_argument("numbers", nargs="+", metavar="NUMBER")
        sub.set_defaults(run=run)
    sender_commands.add_parser("list", help="list the pool").set_defaults(run=cmd_senders_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(Settings.from_env(), args))
    except DomainError as error:
        print(f"mplus: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(error, file=sys.stderr)  # the message alone, as SystemExit(message) printed it
        return 1


if __name__ == "__main__":
    sys.exit(main())
