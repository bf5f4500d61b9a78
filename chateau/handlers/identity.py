"""A user renamed for good (their directory uid changed, or their account
was retired): what every node does about it.

The store renames the account in one transaction and appends the notice
``user_renamed`` {old, new, last_id} (chateau.store.identity); every node
applies it (chateau.notices), and the node whose sign-in made the rename
applies it at once, before signing the user on under the new name. Applying
it twice is harmless.
"""

from __future__ import annotations

from typing import Any

from chateau.handlers.context import Services
from chateau.signout import SIGNED_OUT

# The close reason of the connections under a renamed user's old name (code
# 4001, as for a revoked key): their session keys still work, and a
# ResumeRequest signs in under the new name.
RENAMED_REASON = "renamed: resume your session to sign in under your new name"


async def rename_here(ctx: Services, old: str, new: str, rename_id: str) -> bool:
    """Act on a rename here, once: the registry's state moves from *old* to
    *new*, and *old*'s connections here are closed (4001). False when this
    node had already acted on it.

    Only connections whose session key is no longer the old name's are
    closed: a newcomer given the old name at once (a retired account's
    uid) keeps theirs.
    """
    if not ctx.registry.rename_user(old, new, rename_id):
        return False
    connections = [c for c in ctx.registry.connections(old) if c.live]
    keys = [c.session_key_hash for c in connections if c.session_key_hash is not None]
    still = await ctx.store.identity.keys_of(old, keys) if keys else set()
    for connection in connections:
        if connection.session_key_hash not in still:
            connection.close_for(SIGNED_OUT, RENAMED_REASON)
    return True


async def apply_user_renamed(ctx: Services, body: dict[str, Any]) -> None:
    """The notice's applier: the rename here, then messages committed under
    the old name meanwhile (a send that passed its checks before it) moved."""
    old, new = str(body["old"]), str(body["new"])
    await rename_here(ctx, old, new, str(body.get("rename_id") or ""))
    await ctx.store.identity.move_stragglers(old, new, int(body.get("last_id") or 0))
