"""Artifact store: one small interface over a local folder (``file://``) and S3/MinIO (``s3://``).

Every stage writes through it: writes are atomic (temp file + rename locally,
a single PUT on S3) and a missing object raises ``ArtifactNotFound``.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import Settings, get_settings


class ArtifactNotFound(SmartEnergyError, FileNotFoundError):
    """The object asked for is not in the store."""


class ArtifactStore(Protocol):
    uri: str

    def put_bytes(self, key: str, data: bytes) -> str: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...


class LocalStore:
    """Objects as files below one folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.uri = self.root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        key = key.strip("/")
        if not key or ".." in Path(key).parts:
            raise SmartEnergyError(f"invalid artifact key: {key!r}")
        return self.root / key

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` at ``key`` atomically; returns the object's URI."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.resolve().as_uri()

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact {key!r} in {self.uri}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )


class S3Store:
    """Objects in an S3 bucket under a prefix, through the ``minio`` client."""

    def __init__(self, bucket: str, prefix: str, settings: Settings):
        from minio import Minio

        if not settings.s3_endpoint:
            raise SmartEnergyError("s3:// artifact store needs S3_ENDPOINT (host:port of MinIO/S3)")
        endpoint = settings.s3_endpoint.split("://", 1)[-1]
        self.client = Minio(
            endpoint,
            access_key=settings.aws_access_key_id or None,
            secret_key=settings.aws_secret_access_key or None,
            secure=settings.s3_use_https,
            region=settings.s3_region,
        )
        self.settings = settings
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        key = key.strip("/")
        if not key:
            raise SmartEnergyError("empty artifact key")
        return f"{self.prefix}/{key}" if self.prefix else key

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def put_bytes(self, key: str, data: bytes) -> str:
        """One PUT: S3 objects appear whole or not at all."""
        self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))
        return f"s3://{self.bucket}/{self._key(key)}"

    def get_bytes(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, self._key(key))
        except S3Error as err:
            if err.code in {"NoSuchKey", "NoSuchBucket"}:
                raise ArtifactNotFound(f"no artifact {key!r} in {self.uri}") from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self._key(key))
            return True
        except S3Error as err:
            if err.code in {"NoSuchKey", "NoSuchBucket", "NoSuchObject"}:
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix.strip("/") else self.prefix
        start = len(self.prefix) + 1 if self.prefix else 0
        if not self.client.bucket_exists(self.bucket):
            return []
        return sorted(
            o.object_name[start:]
            for o in self.client.list_objects(self.bucket, prefix=full, recursive=True)
            if not o.is_dir
        )


def download_object(uri: str, dest: str | Path, settings: Settings | None = None) -> Path:
    """Copy the object at ``uri`` (``s3://bucket/key`` or ``file://...``) to the local file ``dest``."""
    base, _, key = uri.rstrip("/").rpartition("/")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(open_store(base, settings).get_bytes(key))
    return dest


def open_store(uri: str | None = None, settings: Settings | None = None) -> ArtifactStore:
    """Open the artifact store at ``uri`` (default: the settings' ``SE_ARTIFACT_URI``)."""
    settings = settings or get_settings()
    uri = uri or settings.artifact_uri
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        return LocalStore(Path(path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise SmartEnergyError(f"s3 URI needs a bucket: {uri!r}")
        return S3Store(parsed.netloc, parsed.path, settings)
    raise SmartEnergyError(f"unsupported artifact store URI {uri!r} (use file:// or s3://)")
