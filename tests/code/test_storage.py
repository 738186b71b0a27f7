"""The artifact store: local folder and S3 (a real S3-protocol server, moto, on 127.0.0.1)."""

from __future__ import annotations

import pytest

from smart_energy.components.settings import Settings
from smart_energy.components.storage import ArtifactNotFound, LocalStore, S3Store, open_store
from helpers import free_port


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_store(s3_server):
    settings = Settings(s3_endpoint=s3_server, aws_access_key_id="test", aws_secret_access_key="test")
    store = open_store("s3://artifacts/smart-energy", settings)
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    return store


@pytest.fixture
def local_store(tmp_path):
    return open_store(tmp_path.as_uri())


@pytest.fixture(params=["local", "s3"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


def test_roundtrip_list_and_exists(store):
    uri = store.put_bytes("models/a/1/model.json", b"{}")
    store.put_bytes("models/a/1/metadata.json", b'{"v": 1}')
    store.put_bytes("other/x", b"x")
    assert uri.endswith("models/a/1/model.json")
    assert store.get_bytes("models/a/1/metadata.json") == b'{"v": 1}'
    assert store.exists("models/a/1/model.json")
    assert not store.exists("models/a/2/model.json")
    assert store.list("models/a") == ["models/a/1/metadata.json", "models/a/1/model.json"]
    store.put_bytes("models/a/1/model.json", b"[]")  # overwrite
    assert store.get_bytes("models/a/1/model.json") == b"[]"


def test_missing_object_is_a_clear_error(store):
    with pytest.raises(ArtifactNotFound, match="no artifact 'nope/missing'"):
        store.get_bytes("nope/missing")


def test_local_writes_leave_no_temp_files_and_reject_escapes(local_store: LocalStore):
    local_store.put_bytes("a/b.bin", b"1" * 1000)
    assert [p.name for p in (local_store.root / "a").iterdir()] == ["b.bin"]
    with pytest.raises(ValueError, match="invalid artifact key"):
        local_store.put_bytes("../escape", b"x")


def test_unsupported_scheme_and_missing_endpoint():
    with pytest.raises(ValueError, match="unsupported artifact store URI"):
        open_store("ftp://host/x", Settings())
    with pytest.raises(ValueError, match="S3_ENDPOINT"):
        open_store("s3://bucket/x", Settings(s3_endpoint=""))


def test_download_object_copies_one_object_to_a_local_file(store, tmp_path):
    from smart_energy.components.storage import download_object

    store.put_bytes("raw/meter.txt", b"Date;Time\n")
    settings = getattr(store, "settings", None)  # the S3 store's endpoint and keys
    got = download_object(f"{store.uri}/raw/meter.txt", tmp_path / "copy" / "meter.txt", settings)
    assert got.read_bytes() == b"Date;Time\n"
    with pytest.raises(ArtifactNotFound):
        download_object(f"{store.uri}/raw/absent.txt", tmp_path / "x", settings)
