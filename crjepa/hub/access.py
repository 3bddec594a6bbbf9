"""Hugging Face Hub access, defined once: the one error type, the credentials check and the upload.

Every push of the project goes through here: ``crjepa push`` and the training run's model / embeddings uploads
(`push_folder`), and ``python -m datasets_scripts ... --push-to-hub`` (`prepare_push` before the conversion,
`upload_folder` after it). Failures become one `HubError` sentence that says what to do; the Hub client
(``api``: an ``HfApi`` or a stand-in with whoami / create_repo / upload_folder) is injectable for tests.
Imports no torch; huggingface_hub is imported on use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from crjepa.errors import CRJepaError

HUB_HINT = "log in with `hf auth login` (or pass --token), check the network and that you may write to it"
REPO_TYPES = ("dataset", "model")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")  # = utils.arguments
"""A Hub repo id as the Hub accepts it (``user-or-org/name``): cards paste repo ids into code and commands, so
anything else (quotes, spaces, new lines) is refused where a repo id enters."""


def is_repo_id(value: Any) -> bool:
    """Whether ``value`` reads as a Hub repo id ``owner/name`` (not a local path: no leading ./ or /, one slash)."""
    return isinstance(value, str) and REPO_ID.fullmatch(value) is not None and ".." not in value


class HubError(CRJepaError, RuntimeError):
    """The Hub cannot be reached or written (offline, no token, no permission); the message says what to do."""


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return flag or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def reason(err: BaseException) -> str:
    """The first line of an exception, with its type: ``ConnectionError: Failed to resolve ...``."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


NETWORK_ERRORS = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "NetworkError",
        "TransportError",
        "TimeoutException",
        "ProxyError",
        "ConnectionError",
        "Timeout",
        "NameResolutionError",
        "gaierror",
    }
)
"""Names of the exception classes (httpx, requests, urllib3, socket, builtins) that mean the Hub was not reached,
matched by name so that no HTTP client is imported."""


def unreachable(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it chains) says the Hub could not be reached, as opposed to refusing."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (ConnectionError, TimeoutError)) or NETWORK_ERRORS & {c.__name__ for c in type(err).__mro__}:
            return True
        err = err.__cause__ or err.__context__
    return False


def hub_call(what: str, repo_id: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run one Hub call; any failure becomes a one-sentence HubError (the Hub's traceback is not chained)."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # network, 401, 403, proxy: one sentence for the user
        message = f"Cannot push to {repo_id}: {what} failed ({reason(err)}); {HUB_HINT}."
    raise HubError(message) from None


def _client(api: Any, token: str | None) -> Any:
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    return api


def check_hub_access(repo_id: str, api: Any = None, token: str | None = None) -> str:
    """Fail fast (before training, embedding or converting) when a push to ``repo_id`` cannot work; returns the
    user name. Checks the repo id, offline mode, that a token exists and that the Hub accepts it (``whoami``).

    A client without a ``token`` attribute is taken to authenticate itself (tests inject such stand-ins)."""
    if not is_repo_id(repo_id):
        raise HubError(f"Hub repo id {repo_id!r} must look like 'user-or-org/name' (letters, digits, - _ .).")
    if api is None and _offline():
        raise HubError(
            f"Cannot push to {repo_id}: HF_HUB_OFFLINE is set, so the Hugging Face Hub is unreachable; "
            "unset it (and log in with `hf auth login`) or skip the push."
        )
    api = _client(api, token)
    if token is None and hasattr(api, "token"):
        from huggingface_hub import get_token

        token = api.token or get_token()
        if not token:
            raise HubError(
                f"Cannot push to {repo_id}: no Hugging Face token found; run `hf auth login`, set "
                "HF_TOKEN, or pass --token."
            )
    try:
        who = api.whoami(token=token) if token else api.whoami()
    except Exception as err:
        if unreachable(err):
            message = (
                f"Cannot push to {repo_id}: the Hugging Face Hub could not be reached ({reason(err)}); check "
                "the network (or proxy / HF_ENDPOINT) and retry, or skip the push."
            )
        else:
            message = f"Cannot push to {repo_id}: the Hub did not accept the token ({reason(err)}); {HUB_HINT}."
    else:
        return str(who.get("name", "")) if isinstance(who, Mapping) else ""
    raise HubError(message) from None


def prepare_push(
    repo_id: str, repo_type: str = "dataset", api: Any = None, token: str | None = None, private: bool = False
) -> tuple[Any, str]:
    """Check the credentials and create the repo (if needed) BEFORE any long work; returns (client, repo URL)."""
    if repo_type not in REPO_TYPES:
        raise HubError(f"repo_type must be 'dataset' or 'model', found {repo_type!r}.")
    check_hub_access(repo_id, api=api, token=token)
    api = _client(api, token)
    extra = {"token": token} if token else {}
    url = hub_call(
        "repo creation", repo_id, api.create_repo, repo_id, repo_type=repo_type, private=private, exist_ok=True, **extra
    )
    return api, str(url)


LOCAL_ONLY = [".embed/*", ".embed/**", ".crjepa-source.json", "*.tmp-*", "*.lock"]
"""Upload ignore patterns of local run bookkeeping (besides the marker file): the run folder of a sharded `crjepa
embed`, an archive's local data-source record (`crjepa.hub.archive.provenance.LOCAL_SOURCE_FILE`, an absolute local
path), files being written (a killed writer's ``.test-NNNNN.parquet.tmp-PID``) and writers' locks."""


def upload_folder(
    api: Any,
    folder: str | Path,
    repo_id: str,
    repo_type: str = "dataset",
    commit_message: str | None = None,
    token: str | None = None,
) -> None:
    """Upload a prepared folder to a repo that `prepare_push` checked and created. Local bookkeeping is not part
    of what is published: the writer's marker file (`crjepa.utils.atomic.MARKER_FILE`), the run folder of a
    sharded `crjepa embed` (``.embed/``: its run signature names the local input path) and temp files (`LOCAL_ONLY`)."""
    from crjepa.utils.atomic import MARKER_FILE

    message = commit_message or f"Upload CR-JEPA {'embeddings' if repo_type == 'dataset' else 'model'}"
    extra = {"token": token} if token else {}
    hub_call(
        "upload",
        repo_id,
        api.upload_folder,
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type=repo_type,
        commit_message=message,
        ignore_patterns=LOCAL_ONLY + [MARKER_FILE],
        **extra,
    )


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str = "dataset",
    api: Any = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload a folder (embeddings archive or saved model) to a Hub repo, creating it if needed; returns the
    repo URL."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Nothing to push: {folder} is not a folder")
    api, url = prepare_push(repo_id, repo_type=repo_type, api=api, token=token, private=private)
    upload_folder(api, folder, repo_id, repo_type=repo_type, commit_message=commit_message, token=token)
    return url


__all__ = [
    "HUB_HINT",
    "REPO_ID",
    "HubError",
    "check_hub_access",
    "hub_call",
    "is_repo_id",
    "prepare_push",
    "push_folder",
    "reason",
    "unreachable",
    "upload_folder",
]
