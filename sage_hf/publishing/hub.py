"""Push an exported student folder to the Hugging Face Hub, keeping the access token out of logs and saved files.

The folder is what `export_student` (+ a model card) writes: a plain transformers model that anyone loads with
`from_pretrained("<user>/<repo>")`, without sage_hf. The push is `HfApi.create_repo(exist_ok=True)` then
`HfApi.upload_folder`, so weights go through the Hub's large-file storage exactly as `transformers`' own
`push_to_hub` would send them.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

REDACTED = "<redacted>"

# Hub user access tokens ("hf_" + 34 letters/digits) and OAuth bearer values: hidden even when the caller did not say
# which token to hide (a token read from HF_TOKEN or the token file, pasted into a message...).
_HF_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
_BEARER_PATTERN = re.compile(r"(\b[Bb]earer\s+)[A-Za-z0-9._~+/=-]{8,}")
_TOKEN_KEY_PATTERN = re.compile(r"(?i)(^|_)(token|secret|password|api_key)$")


def redact(text: str, token: str | None = None) -> str:
    """`text` with `token`, any Hub-style token and any bearer credential replaced by "<redacted>"."""
    if token:
        text = text.replace(token, REDACTED)
    text = _HF_TOKEN_PATTERN.sub(REDACTED, text)
    return _BEARER_PATTERN.sub(lambda m: m.group(1) + REDACTED, text)


def strip_tokens(args: T) -> T:
    """A shallow copy of an arguments object (e.g. `TrainingArguments`) with its token attributes set to None.

    `Trainer` pickles its arguments as training_args.bin next to the weights, and `push_to_hub` uploads that file:
    pickle the copy instead, so `hub_token` does not travel with the model.
    """
    clean = copy.copy(args)
    for name, value in list(vars(clean).items()):
        if _is_secret(name, value):
            object.__setattr__(clean, name, None)
    return clean


def _is_secret(key: str, value: Any) -> bool:
    return isinstance(value, str) and bool(value) and _TOKEN_KEY_PATTERN.search(key) is not None


def hub_endpoint() -> str:
    """The Hub to talk to: `HF_ENDPOINT` as set now (a mirror, a private Hub, a test server), else the default.

    `huggingface_hub` reads HF_ENDPOINT once, at import; reading it again here honours a value set later on.
    """
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or "").strip().rstrip("/") or constants.ENDPOINT


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = False,
    commit_message: str = "Upload SAGE student",
    revision: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload every file of `folder` to it in one commit; return the commit URL.

    Args:
        folder: an exported student folder (config, safetensors weights, tokenizer, README.md model card...).
        repo_id: "<user or org>/<name>".
        token: a Hub token with write access; `None` uses the logged-in token (HF_TOKEN or `hf auth login`).
        private: visibility when the repo is created (an existing repo keeps its own); `None` uses the Hub default.
        commit_message: title of the commit.
        revision: branch to push to (created from main if missing); `None` pushes to main.
    """
    from huggingface_hub import HfApi, constants

    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"Nothing to push: {folder} is not a folder")
    if not any(p.is_file() for p in folder.iterdir()):
        raise FileNotFoundError(f"Nothing to push: {folder} is empty")
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like '<user or org>/<name>', got {repo_id!r}")
    if constants.is_offline_mode():
        raise RuntimeError(
            "Cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE). Unset it, or copy the folder by hand."
        )
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = repo_url.repo_id or repo_id  # the Hub may canonicalise the name
    if revision is not None and revision != constants.DEFAULT_REVISION:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    logger.info("Pushing %s to %s/%s%s", folder, endpoint, repo_id, f" ({revision})" if revision else "")
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=commit_message,
        revision=revision,
        repo_type="model",
    )
    url = str(commit.commit_url or repo_url)
    logger.info("Pushed the student: %s", redact(url, token))
    return url


__all__ = ["REDACTED", "hub_endpoint", "push_folder_to_hub", "redact", "strip_tokens"]
