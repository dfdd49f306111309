"""Operator use cases: accounts and their API keys."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from server.domain.errors import DomainError
from server.domain.keys import generate_key, hash_key
from server.service.clock import utc_now
from server.storage.accounts import AccountSummary
from server.storage.errors import ConflictingWrite
from server.storage.unit_of_work import UnitOfWork


class AccountError(DomainError):
    """An operator command names something that does not exist or already exists."""


@dataclass(frozen=True)
class NewAccount:
    id: str
    name: str
    key: str
    """Shown once: only its hash is stored."""
    webhook_secret: str
    """Signs the account's delivery-receipt webhooks; `mplus accounts secret` shows it again."""


def new_webhook_secret() -> str:
    """256 random bits, hex: the HMAC-SHA256 key of an account's webhooks."""
    return secrets.token_hex(32)


def create_account(unit_of_work: Callable[[], UnitOfWork], name: str) -> NewAccount:
    name = name.strip()
    if not name:
        raise AccountError("an account name is required")
    now = utc_now()
    key = generate_key()
    webhook_secret = new_webhook_secret()
    try:
        with unit_of_work() as uow:
            account_id = uow.accounts.add(name, webhook_secret, now)
            uow.keys.add(account_id, hash_key(key), now)
            uow.commit()
    except ConflictingWrite as error:
        raise AccountError(str(error)) from error
    return NewAccount(account_id, name, key, webhook_secret)


def webhook_secret(
    unit_of_work: Callable[[], UnitOfWork], account: str, *, rotate: bool = False
) -> str:
    """The secret that signs the account's webhooks (id or name); `rotate` replaces it first:
    receipts posted from then on are signed with the new one."""
    with unit_of_work() as uow:
        account_id = uow.accounts.id_for(account)
        if account_id is None:
            raise AccountError(f"no account with id or name {account!r}")
        if rotate:
            uow.accounts.set_webhook_secret(account_id, new_webhook_secret())
        secret = uow.accounts.webhook_secret(account_id)
        uow.commit()
    assert secret is not None
    return secret


def list_accounts(unit_of_work: Callable[[], UnitOfWork]) -> list[AccountSummary]:
    with unit_of_work() as uow:
        return uow.accounts.summaries()


def create_key(unit_of_work: Callable[[], UnitOfWork], account: str) -> str:
    """A further key for the account named by id or name; returned once."""
    key = generate_key()
    with unit_of_work() as uow:
        account_id = uow.accounts.id_for(account)
        if account_id is None:
            raise AccountError(f"no account with id or name {account!r}")
        uow.keys.add(account_id, hash_key(key), utc_now())
        uow.commit()
    return key


def revoke_key(unit_of_work: Callable[[], UnitOfWork], key: str) -> None:
    """Revokes at once: the next request with the key is refused, in every process."""
    with unit_of_work() as uow:
        if not uow.keys.revoke(hash_key(key), utc_now()):
            raise AccountError("no active key matches")
        uow.commit()
