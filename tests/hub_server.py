"""A local Hugging Face Hub test double, and the `local_hub` pytest fixture that points the clients at it.

Why this exists: the Hub cannot be reached from the machines this project is built and tested on, and no package
on PyPI implements the Hub's HTTP endpoints faithfully enough to push with `huggingface_hub` 2.x and load back with
`transformers` (the one "local Hub server" package found, `hf-local-hub`, is a thin client around a Go binary that
it does not ship). So this module implements exactly the endpoints that `HfApi.create_repo` + `upload_folder` and
`from_pretrained` / `pipeline` use, with the Hub's status codes and headers, and nothing else:

Hub origin (the `HF_ENDPOINT`):
    POST /api/repos/create                              create a model repo (+ initial `.gitattributes` commit)
    POST /api/validate-yaml                             README.md front matter check made before any upload
    POST /api/models/{repo}/preupload/{rev}             regular vs LFS decision (.gitattributes, binary, >= 10 MB)
    POST /{repo}.git/info/lfs/objects/batch             Git LFS batch API, "basic" transfer, signed storage URLs
    POST /{repo}.git/info/lfs/objects/verify            LFS verify action
    POST /api/models/{repo}/commit/{rev}                NDJSON commit (header, file, lfsFile, deletedFile/Folder)
    POST /api/models/{repo}/branch/{branch}             create a branch (for `revision=`)
    GET  /api/models/{repo}[/revision/{rev}]            model_info (siblings, cardData, pipeline_tag, private)
    GET  /api/models/{repo}/tree/{rev}[/{path}]         list_repo_tree / list_repo_files
    HEAD|GET /{repo}/resolve/{rev}/{path}               regular files: 200 + ETag, X-Repo-Commit, Content-Length;
                                                        LFS files: 302 to storage + X-Linked-Etag, X-Linked-Size
Storage origin (a second port: another origin, like the Hub's CDN/S3, so clients must drop the token there):
    PUT  /upload/{oid}?size&exp&sig                     LFS upload target (sha256 and size checked)
    HEAD|GET /lfs/{oid}?exp&sig                         LFS download target (Range supported)

Write endpoints need `Authorization: Bearer <token>` of the namespace owner (401 when missing or unknown, 403 for
someone else's namespace); a wrong token is refused on every endpoint, as on the Hub. Private repos are invisible
(401/404 `RepoNotFound`) without their owner's token. Xet storage is not implemented: `local_hub` sets
`HF_HUB_DISABLE_XET` so `huggingface_hub` uses the Git LFS protocol, which the Hub still serves.

Both servers listen on 127.0.0.1 on free ports, read bodies of bounded size with socket timeouts, answer a bounded
number of requests, record each request (method, path, whether it was authenticated: never the token) and are shut
down, open connections included, when the fixture ends.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import mimetypes
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

HUB_USER = "sage-tester"
HUB_TOKEN = "hf_" + "SageLocalHubTestToken0123456789abcd"  # looks like a real token, so redaction is exercised

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files of 10 MB and more through LFS
MAX_BODY = 64 * 1024 * 1024
MAX_REQUESTS = 2000
SOCKET_TIMEOUT = 15.0

# The `.gitattributes` the Hub writes into every new model repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
        "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
        "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm",
        "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class HubFile:
    size: int
    git_oid: str  # of the content, or of the LFS pointer
    sha256: str | None = None  # set for LFS files

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclass
class HubCommit:
    oid: str
    parent: str | None
    title: str
    description: str
    files: dict[str, HubFile]
    date: str


@dataclass
class HubRepo:
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, HubCommit] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestRecord:
    origin: str  # "hub" or "storage"
    method: str
    path: str
    authenticated: bool
    status: int


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.extra = extra or {}  # more JSON fields, as the Hub sends (e.g. "url" with a 409 on create)


class HubServer:
    """Repos in memory, file contents under `root`; one HTTP server for the Hub API, one for LFS storage."""

    def __init__(self, root: Path, tokens: dict[str, str] | None = None, max_requests: int = MAX_REQUESTS):
        self.root = Path(root)
        (self.root / "git").mkdir(parents=True, exist_ok=True)
        (self.root / "lfs").mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens or {HUB_TOKEN: HUB_USER})
        self.max_requests = max_requests
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[RequestRecord] = []
        self.create_payloads: list[dict] = []
        self._secret = secrets.token_bytes(32)
        self._lock = threading.RLock()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "HubServer":
        for origin in ("hub", "storage"):
            server = _Server(("127.0.0.1", 0), _handler_for(self, origin))
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                      name=f"local-hub-{origin}", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def storage_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    @property
    def token(self) -> str:
        return next(t for t, u in self.tokens.items() if u == HUB_USER)

    @property
    def user(self) -> str:
        return HUB_USER

    # ------------------------------------------------------------------ inspection helpers for tests

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Contents of every file at `revision` (LFS files resolved to their content)."""
        with self._lock:
            commit = self._commit(self.repos[repo_id], revision)
            return {path: self._read(f) for path, f in commit.files.items()}

    def lfs_paths(self, repo_id: str, revision: str = "main") -> set[str]:
        with self._lock:
            commit = self._commit(self.repos[repo_id], revision)
            return {path for path, f in commit.files.items() if f.is_lfs}

    def stored_objects(self) -> Iterator[bytes]:
        """Every byte string the server has stored, committed or not."""
        for folder in ("git", "lfs"):
            for path in sorted((self.root / folder).iterdir()):
                yield path.read_bytes()

    # ------------------------------------------------------------------ storage

    def _store_git(self, data: bytes) -> HubFile:
        oid = git_blob_oid(data)
        path = self.root / "git" / oid
        if not path.exists():
            path.write_bytes(data)
        return HubFile(size=len(data), git_oid=oid)

    def _read(self, f: HubFile) -> bytes:
        return (self.root / ("lfs" if f.is_lfs else "git") / (f.sha256 or f.git_oid)).read_bytes()

    def _lfs_file(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise HubError(400, "Invalid LFS oid")
        return self.root / "lfs" / sha256

    def _sign(self, verb: str, oid: str, size: int, exp: int) -> str:
        return hmac.new(self._secret, f"{verb}:{oid}:{size}:{exp}".encode(), hashlib.sha256).hexdigest()

    def _signed_url(self, verb: str, oid: str, size: int) -> str:
        exp = int(time.time()) + 600
        prefix = "upload" if verb == "PUT" else "lfs"
        return f"{self.storage_endpoint}/{prefix}/{oid}?size={size}&exp={exp}&sig={self._sign(verb, oid, size, exp)}"

    def _check_signature(self, verb: str, oid: str, query: dict[str, list[str]]) -> int:
        try:
            size, exp, sig = int(query["size"][0]), int(query["exp"][0]), query["sig"][0]
        except (KeyError, ValueError):
            raise HubError(403, "Missing or malformed signature")
        if exp < time.time() or not hmac.compare_digest(sig, self._sign(verb, oid, size, exp)):
            raise HubError(403, "Signature does not match or has expired")
        return size

    # ------------------------------------------------------------------ repos and revisions

    def _repo(self, repo_id: str, user: str | None, write: bool = False) -> HubRepo:
        repo = self.repos.get(repo_id)
        allowed = repo is not None and (not repo.private or user == repo_id.split("/")[0])
        if not allowed:
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write:
            self._check_namespace(repo_id.split("/")[0], user)
        return repo

    def _check_namespace(self, namespace: str, user: str | None) -> None:
        if user is None:
            raise HubError(401, "You must be authenticated to write to the Hub")
        if namespace != user:
            raise HubError(403, f"You don't have the rights to write to {namespace}")

    def _commit(self, repo: HubRepo, revision: str) -> HubCommit:
        oid = repo.branches.get(revision) or (revision if revision in repo.commits else None)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _new_commit(self, repo: HubRepo, branch: str, parent: HubCommit | None, title: str, description: str,
                    files: dict[str, HubFile]) -> HubCommit:
        body = json.dumps({"parent": parent.oid if parent else None, "title": title, "description": description,
                           "files": {p: f.git_oid for p, f in sorted(files.items())}, "nonce": len(repo.commits)})
        commit = HubCommit(oid=hashlib.sha1(body.encode()).hexdigest(), parent=parent.oid if parent else None,
                           title=title, description=description, files=files, date=_now())
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def _lfs_patterns(self, commit: HubCommit) -> list[str]:
        attributes = commit.files.get(".gitattributes")
        if attributes is None:
            return []
        lines = self._read(attributes).decode().splitlines()
        return [line.split()[0] for line in lines if "filter=lfs" in line.split()[1:]]

    def _should_be_lfs(self, path: str, size: int, sample: bytes, patterns: list[str]) -> bool:
        if size >= LFS_THRESHOLD or b"\0" in sample:
            return True
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(path if "/" in pattern else name, pattern) for pattern in patterns)

    # ------------------------------------------------------------------ endpoints

    def create_repo(self, user: str | None, body: dict) -> tuple[int, dict]:
        namespace = body.get("organization") or user
        if namespace is None:
            raise HubError(401, "You must be authenticated to create a repo")
        self._check_namespace(namespace, user)
        if body.get("type", "model") != "model":
            raise HubError(400, "This test double only hosts model repos")
        name = body.get("name", "")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name) or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo name {name!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.endpoint}/{repo_id}"
        self.create_payloads.append(dict(body))
        if repo_id in self.repos:
            raise HubError(409, "You already created this model repo", headers={"X-Error-Url": url}, extra={"url": url})
        visibility = body.get("visibility") or ("private" if body.get("private") else "public")
        repo = HubRepo(repo_id=repo_id, private=visibility == "private", created_at=_now())
        self.repos[repo_id] = repo
        self._new_commit(repo, "main", None, "initial commit", "",
                         {".gitattributes": self._store_git(DEFAULT_GITATTRIBUTES.encode())})
        return 200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}

    def validate_yaml(self, body: dict) -> tuple[int, dict]:
        import yaml

        content = body.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        if match is None:
            return 200, {"errors": [], "warnings": [{"message": "Empty or missing yaml metadata in repo card"}]}
        try:
            data = yaml.safe_load(match.group(1))
        except yaml.YAMLError as e:
            return 400, {"errors": [{"message": f"Invalid YAML: {e}"}], "warnings": []}
        if data is not None and not isinstance(data, dict):
            return 400, {"errors": [{"message": "YAML metadata must be a mapping"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def preupload(self, user: str | None, repo_id: str, revision: str, body: dict) -> tuple[int, dict]:
        repo = self._repo(repo_id, user, write=True)
        commit = self._commit(repo, revision)
        patterns = self._lfs_patterns(commit)
        files = []
        for entry in body.get("files", [])[:256]:
            path, size = entry["path"], int(entry["size"])
            sample = base64.b64decode(entry.get("sample", ""))
            lfs = self._should_be_lfs(path, size, sample, patterns)
            info: dict[str, Any] = {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            existing = commit.files.get(path)
            if existing is not None:
                info["oid"] = existing.sha256 if existing.is_lfs else existing.git_oid
            files.append(info)
        return 200, {"files": files, "commitOid": commit.oid}

    def lfs_batch(self, user: str | None, repo_id: str, body: dict) -> tuple[int, dict]:
        self._repo(repo_id, user, write=True)
        if body.get("operation") != "upload":
            raise HubError(400, "This test double only implements LFS uploads (downloads go through /resolve)")
        if "basic" not in body.get("transfers", ["basic"]):
            raise HubError(400, "Only the 'basic' LFS transfer is implemented")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            path = self._lfs_file(oid)
            if not (path.exists() and path.stat().st_size == size):
                entry["actions"] = {
                    "upload": {"href": self._signed_url("PUT", oid, size), "expires_in": 600},
                    "verify": {"href": f"{self.endpoint}/{repo_id}.git/info/lfs/objects/verify"},
                }
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_verify(self, user: str | None, repo_id: str, body: dict) -> tuple[int, dict]:
        self._repo(repo_id, user, write=True)
        path = self._lfs_file(body.get("oid", ""))
        if not path.exists() or path.stat().st_size != body.get("size"):
            raise HubError(404, "Object not found in LFS storage")
        return 200, {"success": True}

    def lfs_put(self, oid: str, query: dict[str, list[str]], data: bytes) -> tuple[int, dict]:
        size = self._check_signature("PUT", oid, query)
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "Uploaded content does not match the announced sha256 and size")
        path = self._lfs_file(oid)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return 200, {}

    def commit(self, user: str | None, repo_id: str, revision: str, query: dict[str, list[str]],
               lines: list[dict]) -> tuple[int, dict]:
        repo = self._repo(repo_id, user, write=True)
        if query.get("create_pr"):
            raise HubError(501, "Pull requests are not implemented by the test double")
        parent = self._commit(repo, revision)
        if revision not in repo.branches:
            raise HubError(400, f"Can only commit to a branch, not to {revision}")
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first NDJSON line must be the commit header")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, parent.oid):
            raise HubError(412, "A commit has happened since the parent commit. Please retry.")
        patterns = self._lfs_patterns(parent)
        files = dict(parent.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "")
            if not path or path.startswith("/") or ".." in path.split("/") or path.split("/")[0] in (".git",):
                raise HubError(400, f"Invalid path {path!r}")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "Only base64 file contents are implemented")
                data = base64.b64decode(value["content"])
                if self._should_be_lfs(path, len(data), data[:512], patterns):
                    raise HubError(400, f"Your push was rejected because it contains binary files: {path} "
                                        "must be uploaded with LFS")
                files[path] = self._store_git(data)
            elif key == "lfsFile":
                sha256 = value.get("oid", "")
                stored = self._lfs_file(sha256)
                if not stored.exists():
                    raise HubError(422, f"LFS object {sha256} for {path} was never uploaded")
                size = stored.stat().st_size
                files[path] = HubFile(size=size, git_oid=git_blob_oid(lfs_pointer(sha256, size)), sha256=sha256)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"Commit operation {key!r} is not implemented by the test double")
        commit = self._new_commit(repo, revision, parent, header.get("summary", ""), header.get("description", ""),
                                  files)
        return 200, {"success": True, "commitOid": commit.oid, "commitUrl": f"{self.endpoint}/{repo_id}/commit/"
                     f"{commit.oid}", "hookOutput": ""}

    def create_branch(self, user: str | None, repo_id: str, branch: str, body: dict) -> tuple[int, dict]:
        repo = self._repo(repo_id, user, write=True)
        if branch in repo.branches:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        start = self._commit(repo, body.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        return 200, {}

    def model_info(self, user: str | None, repo_id: str, revision: str, query: dict[str, list[str]]) -> dict:
        import yaml

        repo = self._repo(repo_id, user)
        commit = self._commit(repo, revision)
        card: dict = {}
        if "README.md" in commit.files:
            match = re.match(r"^---\s*\n(.*?)\n---", self._read(commit.files["README.md"]).decode(), re.S)
            card = (yaml.safe_load(match.group(1)) or {}) if match else {}
        config: dict = {}
        if "config.json" in commit.files:
            config = json.loads(self._read(commit.files["config.json"]))
        pipeline_tag = card.get("pipeline_tag")
        if pipeline_tag is None and any(a.endswith("ForSequenceClassification") for a in config.get("architectures")
                                        or []):
            pipeline_tag = "text-classification"
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, f in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=f.size, blobId=f.git_oid)
                if f.is_lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size,
                                      "pointerSize": len(lfs_pointer(f.sha256, f.size))}
            siblings.append(sibling)
        tags = list(card.get("tags") or [])
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
            "createdAt": repo.created_at, "private": repo.private, "disabled": False, "gated": False,
            "downloads": 0, "likes": 0, "tags": tags, "pipeline_tag": pipeline_tag,
            "library_name": card.get("library_name", "transformers" if config else None),
            "cardData": card or None, "config": {k: config[k] for k in ("architectures", "model_type") if k in config},
            "siblings": siblings,
        }

    def tree(self, user: str | None, repo_id: str, revision: str, path: str, recursive: bool) -> list[dict]:
        repo = self._repo(repo_id, user)
        commit = self._commit(repo, revision)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, dict] = {}
        for file_path, f in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # folders on the way
                folder = prefix + "/".join(parts[:depth])
                if depth == 1 or recursive:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                                "oid": hashlib.sha1(f"{commit.oid}:{folder}".encode()).hexdigest()})
            if len(parts) == 1 or recursive:
                entry: dict[str, Any] = {"type": "file", "path": file_path, "size": f.size, "oid": f.git_oid}
                if f.is_lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(lfs_pointer(f.sha256, f.size))}
                entries[file_path] = entry
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound",
                           {"X-Repo-Commit": commit.oid})
        return list(entries.values())

    def resolve(self, user: str | None, repo_id: str, revision: str, path: str) -> tuple[int, dict[str, str], bytes]:
        repo = self._repo(repo_id, user)
        commit = self._commit(repo, revision)
        f = commit.files.get(path)
        if f is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{f.git_oid}"', "Accept-Ranges": "bytes"}
        if f.is_lfs:
            location = self._signed_url("GET", f.sha256, f.size)
            headers.update({"Location": location, "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
            return 302, headers, f"Found. Redirecting to {location}".encode()
        headers["Content-Type"] = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return 200, headers, self._read(f)

    def lfs_get(self, oid: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        size = self._check_signature("GET", oid, query)
        path = self._lfs_file(oid)
        if not path.exists() or path.stat().st_size != size:
            raise HubError(404, "No such object")
        return 200, {"ETag": f'"{oid}"', "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}, \
            path.read_bytes()


class _Server(ThreadingHTTPServer):
    """Tracks open connections so `close_connections` can end idle keep-alive ones at shutdown."""

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, *args: Any, **kwargs: Any):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


_HUB_ROUTES = [
    ("POST", re.compile(r"/api/repos/create"), "create"),
    ("POST", re.compile(r"/api/validate-yaml"), "validate_yaml"),
    ("POST", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)"), "preupload"),
    ("POST", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)"), "commit"),
    ("POST", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<rev>[^/]+)"), "branch"),
    ("GET", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?"), "tree"),
    ("GET", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?"), "model_info"),
    ("POST", re.compile(r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch"), "lfs_batch"),
    ("POST", re.compile(r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/verify"), "lfs_verify"),
    ("GET", re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
]
_STORAGE_ROUTES = [
    ("PUT", re.compile(r"/upload/(?P<oid>[0-9a-f]{64})"), "lfs_put"),
    ("GET", re.compile(r"/lfs/(?P<oid>[0-9a-f]{64})"), "lfs_get"),
]


def _handler_for(hub: HubServer, origin: str) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.hub, Handler.origin = hub, origin
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    hub: HubServer
    origin: str

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:  # requests are recorded in `hub.requests` instead
        pass

    # ------------------------------------------------------------------ plumbing

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        status = 500
        try:
            body = self._read_body()
            with self.hub._lock:
                if len(self.hub.requests) >= self.hub.max_requests:
                    raise HubError(400, "The test double's request budget is exhausted")
                user = self._user() if self.origin == "hub" else None
                status, headers, payload = self._route(method, split.path, query, body, user)
        except HubError as e:
            status, payload = e.status, json.dumps({"error": e.message, **e.extra}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
        except Exception as e:  # a bug in the double: report it, never hang the client
            status, headers, payload = 500, {"Content-Type": "application/json"}, json.dumps(
                {"error": f"test double failure: {type(e).__name__}: {e}"}).encode()
        with self.hub._lock:
            self.hub.requests.append(RequestRecord(self.origin, method, split.path,
                                                   "Authorization" in self.headers, status))
        self._respond(status, headers, payload, head=method == "HEAD")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    raise HubError(413, "Request body too large for the test double")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise HubError(413, "Request body too large for the test double")
        return self.rfile.read(length) if length else b""

    def _user(self) -> str | None:
        authorization = self.headers.get("Authorization")
        if authorization is None:
            return None
        match = re.fullmatch(r"Bearer (\S+)", authorization.strip())
        if match is None or match.group(1) not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[match.group(1)]

    def _respond(self, status: int, headers: dict[str, str], payload: bytes, head: bool) -> None:
        range_header = self.headers.get("Range")
        if status == 200 and range_header and headers.get("Accept-Ranges") == "bytes":
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if match:
                start = int(match.group(1))
                end = min(int(match.group(2)) if match.group(2) else len(payload) - 1, len(payload) - 1)
                if start > end:
                    status, payload = 416, b""
                    headers["Content-Range"] = f"bytes */{len(payload)}"
                else:
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(payload)}"
                    status, payload = 206, payload[start:end + 1]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
               user: str | None) -> tuple[int, dict[str, str], bytes]:
        routes = _HUB_ROUTES if self.origin == "hub" else _STORAGE_ROUTES
        for route_method, pattern, name in routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method != route_method and not (route_method == "GET" and method == "HEAD"):
                raise HubError(405, f"{method} is not allowed on {path}")
            args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            return self._call(name, args, query, body, user)
        raise HubError(404, f"{method} {path} is not implemented by the test double")

    def _call(self, name: str, args: dict[str, str], query: dict[str, list[str]], body: bytes,
              user: str | None) -> tuple[int, dict[str, str], bytes]:
        hub = self.hub
        rev = args.get("rev", "main")
        if name == "resolve":
            return hub.resolve(user, args["repo"], rev, args["path"])
        if name == "lfs_get":
            return hub.lfs_get(args["oid"], query)
        if name == "lfs_put":
            status, payload = hub.lfs_put(args["oid"], query, body)
        elif name == "commit":
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            status, payload = hub.commit(user, args["repo"], rev, query, lines)
        elif name == "tree":
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            status, payload = 200, hub.tree(user, args["repo"], rev, args.get("path", ""), recursive)
        elif name == "model_info":
            status, payload = 200, hub.model_info(user, args["repo"], rev, query)
        else:
            data = json.loads(body or b"{}")
            if name == "create":
                status, payload = hub.create_repo(user, data)
            elif name == "validate_yaml":
                status, payload = hub.validate_yaml(data)
            elif name == "preupload":
                status, payload = hub.preupload(user, args["repo"], rev, data)
            elif name == "lfs_batch":
                status, payload = hub.lfs_batch(user, args["repo"], data)
            elif name == "lfs_verify":
                status, payload = hub.lfs_verify(user, args["repo"], data)
            else:
                status, payload = hub.create_branch(user, args["repo"], rev, data)
        content_type = "application/vnd.git-lfs+json" if name.startswith("lfs_") else "application/json"
        return status, {"Content-Type": content_type}, json.dumps(payload).encode()


# ---------------------------------------------------------------------- pytest fixture


def point_clients_at(endpoint: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point an already-imported huggingface_hub and transformers at `endpoint`, online, with an empty cache.

    `huggingface_hub.constants` reads HF_ENDPOINT, HF_HUB_OFFLINE (set by CI) and the cache paths once, at import:
    the environment is set for subprocesses and the constants are patched for this process. transformers keeps one
    shared `HfApi` whose endpoint was fixed when it was built, so it is reset.
    """
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE",
                 "HUGGINGFACE_CO_STAGING"):
        monkeypatch.delenv(name, raising=False)
    cache, token_path = home / "hub", home / "token"
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HF_TOKEN_PATH": str(token_path),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    patched = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_TOKEN_PATH": str(token_path),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)
    try:
        import transformers.utils.hub as transformers_hub
    except ImportError:
        return
    monkeypatch.setattr(transformers_hub, "_hf_api", None)


@pytest.fixture
def local_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running `HubServer` with user `hub.user` / token `hub.token`; HF_ENDPOINT and the clients point at it."""
    root = tmp_path_factory.mktemp("local_hub")
    hub = HubServer(root / "storage").start()
    try:
        point_clients_at(hub.endpoint, root / "home", monkeypatch)
        yield hub
    finally:
        hub.stop()
