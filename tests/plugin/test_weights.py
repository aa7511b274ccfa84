"""Weights resolver: local files, HTTP and S3 downloads, the verified cache, offline mode, safe loading."""

from __future__ import annotations

import hashlib
import pathlib
import random
import uuid

import pytest
import torch
from safetensors.torch import save_file

from iqa_plugin.hub.cards import ModelCard
from iqa_plugin.hub.weights import (
    WeightsError,
    WeightsOfflineError,
    cache_path_for,
    copy_into_cache,
    load_state_dict,
    resolve_card_weights,
    resolve_weights,
    sha256_file,
)


def _payload(n: int = 50_000, seed: int = 0) -> bytes:
    return (
        torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        .numpy()
        .tobytes()
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serve(http_server, data: bytes, name: str | None = None) -> tuple[str, str]:
    """Put ``data`` in the server root under a fresh name; returns (url, request path)."""
    base, root, _ = http_server
    name = name or f"w-{uuid.uuid4().hex[:8]}.pth"
    (root / name).write_bytes(data)
    return f"{base}/{name}", f"/{name}"


def _card(urls: list[str], sha256: str | None, size: int | None) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "test-card",
            "kind": "metric",
            "arch": "IqaPluginQualiCLIP",
            "weights": {"model": {"urls": urls, "sha256": sha256, "bytes": size}},
            "license": "test",
            "paper": "arXiv:0000.00000",
            "score_range": [0, 1],
        }
    )


def test_sha256_file_matches_hashlib(tmp_path):
    data = _payload(3_000_000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == _sha(data)


def test_local_path_and_file_url_are_verified_in_place(tmp_path):
    data = _payload()
    path = tmp_path / "local.pth"
    path.write_bytes(data)
    assert resolve_weights(path, sha256=_sha(data), size=len(data)) == path
    assert resolve_weights(path.as_uri(), sha256=_sha(data)) == path
    assert resolve_weights(str(path)) == path
    with pytest.raises(WeightsError) as info:
        resolve_weights(path, sha256="0" * 64)
    message = str(info.value)
    assert str(path) in message and "0" * 64 in message and _sha(data) in message
    with pytest.raises(WeightsError, match="expected 7 bytes"):
        resolve_weights(path, size=7)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        resolve_weights(tmp_path / "missing.pth")


def test_http_download_then_cache_hit_makes_no_second_request(http_server):
    data = _payload()
    url, request = _serve(http_server, data, name="model weights.pth")
    url = url.replace(" ", "%20")
    stats = http_server[2]
    first = resolve_weights(url, sha256=_sha(data), size=len(data))
    assert first == cache_path_for(url, sha256=_sha(data))
    assert first.parent.name == _sha(data) and first.name == "model weights.pth"
    assert first.read_bytes() == data
    assert resolve_weights(url, sha256=_sha(data), size=len(data)) == first
    assert stats["/model%20weights.pth"] == 1
    assert not [p for p in first.parent.iterdir() if p.name.endswith(".part")]


def test_without_sha_the_cache_key_is_the_url_hash(http_server):
    data = _payload(seed=1)
    url, request = _serve(http_server, data)
    path = resolve_weights(url, filename="renamed.bin")
    assert path.parent.name == hashlib.sha256(url.encode()).hexdigest()[:16] and path.name == "renamed.bin"
    assert resolve_weights(url, filename="renamed.bin") == path
    assert http_server[2][request] == 1


def test_corrupt_cache_file_is_fetched_again_once(http_server):
    data = _payload(seed=2)
    url, request = _serve(http_server, data)
    path = resolve_weights(url, sha256=_sha(data))
    path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="damaged"):
        again = resolve_weights(url, sha256=_sha(data))
    assert again == path and path.read_bytes() == data
    assert http_server[2][request] == 2


def test_server_file_that_never_matches_fails_after_one_retry(http_server):
    served = _payload(seed=3)
    expected = _sha(_payload(seed=4))
    url, request = _serve(http_server, served)
    with pytest.raises(WeightsError) as info:
        resolve_weights(url, sha256=expected, size=len(served))
    message = str(info.value)
    assert url in message and expected in message and _sha(served) in message and str(len(served)) in message
    assert "IQA_PLUGIN_CACHE" in message and "place it at" in message
    assert http_server[2][request] == 2
    dest = cache_path_for(url, sha256=expected)
    assert not dest.exists() and not list(dest.parent.glob("*.part"))


def test_size_mismatch_after_download_is_detected(http_server):
    data = _payload(seed=5)
    url, request = _serve(http_server, data)
    with pytest.raises(WeightsError, match=f"size is {len(data)} bytes, expected {len(data) + 1} bytes"):
        resolve_weights(url, size=len(data) + 1)
    assert http_server[2][request] == 2


def test_offline_and_not_cached_fails_at_once_with_the_fix(http_server, monkeypatch):
    data = _payload(seed=6)
    url, request = _serve(http_server, data)
    monkeypatch.setenv("IQA_PLUGIN_OFFLINE", "1")
    with pytest.raises(WeightsOfflineError) as info:
        resolve_weights(url, sha256=_sha(data))
    message = str(info.value)
    assert url in message
    assert str(cache_path_for(url, sha256=_sha(data))) in message
    assert "IQA_PLUGIN_CACHE" in message and "IQA_PLUGIN_OFFLINE" in message and "copy it to" in message
    assert request not in http_server[2]


def test_offline_uses_the_cache(http_server, monkeypatch, tmp_path):
    data = _payload(seed=7)
    url, request = _serve(http_server, data)
    path = resolve_weights(url, sha256=_sha(data))
    monkeypatch.setenv("IQA_PLUGIN_OFFLINE", "true")
    assert resolve_weights(url, sha256=_sha(data)) == path
    # a file placed by hand (as the offline message tells) is found too
    other = tmp_path / "by-hand.pth"
    other.write_bytes(_payload(seed=8))
    manual_url = f"{http_server[0]}/never-served.pth"
    placed = copy_into_cache(other, manual_url, sha256=_sha(other.read_bytes()))
    assert resolve_weights(manual_url, sha256=_sha(other.read_bytes())) == placed
    assert http_server[2][request] == 1 and "/never-served.pth" not in http_server[2]


def test_card_mirrors_are_tried_in_order(http_server):
    data = _payload(seed=9)
    url, request = _serve(http_server, data)
    missing = f"{http_server[0]}/missing-{uuid.uuid4().hex[:8]}.pth"
    card = _card([missing, url], _sha(data), len(data))
    path = resolve_card_weights(card)
    assert path.read_bytes() == data
    assert path == cache_path_for(missing, sha256=_sha(data))  # named after the first mirror: one cache entry
    missing_request = "/" + missing.rsplit("/", 1)[1]
    assert http_server[2][missing_request] == 1 and http_server[2][request] == 1
    assert resolve_card_weights(card) == path and http_server[2][request] == 1


def test_all_mirrors_failing_names_every_url_and_the_env_vars(http_server):
    urls = [f"{http_server[0]}/gone-{i}-{uuid.uuid4().hex[:6]}.pth" for i in range(2)]
    with pytest.raises(WeightsError) as info:
        resolve_card_weights(_card(urls, None, None))
    message = str(info.value)
    assert all(url in message for url in urls) and "HTTP 404" in message
    assert "IQA_PLUGIN_CACHE" in message and "IQA_PLUGIN_OFFLINE" in message


def test_unreachable_host_is_a_weights_error():
    with pytest.raises(WeightsError, match="127.0.0.1:9/none.pth"):
        resolve_weights("http://127.0.0.1:9/none.pth")


def test_override_wins_and_is_checked_against_the_card_only_when_it_is_the_cards_url(http_server, tmp_path):
    data = _payload(seed=10)
    url, request = _serve(http_server, data)
    card = _card([url], _sha(_payload(seed=11)), None)  # the card's hash does not match what is served
    own = tmp_path / "mine.pth"
    own.write_bytes(data)
    assert resolve_card_weights(card, override=str(own)) == own
    with pytest.raises(WeightsError):
        resolve_card_weights(card, override=url)
    with pytest.raises(ValueError, match="'base'"):
        resolve_card_weights(card, role="base")


def test_s3_download_with_sha_verification(s3):
    data = _payload(seed=12)
    s3.mkdir("weights-bucket")
    s3.pipe("weights-bucket/models/w.pth", data)
    url = "s3://weights-bucket/models/w.pth"  # endpoint comes from AWS_ENDPOINT_URL, as for a user
    path = resolve_weights(url, sha256=_sha(data), size=len(data))
    assert path.read_bytes() == data and path == cache_path_for(url, sha256=_sha(data))
    with pytest.raises(WeightsError, match="s3://weights-bucket/models/other.pth"):
        resolve_weights("s3://weights-bucket/models/other.pth")


def test_cache_dir_is_read_when_used(http_server, tmp_path, monkeypatch):
    data = _payload(seed=13)
    url, request = _serve(http_server, data)
    monkeypatch.setenv("IQA_PLUGIN_CACHE", str(tmp_path / "cache-a"))
    first = resolve_weights(url, sha256=_sha(data))
    monkeypatch.setenv("IQA_PLUGIN_CACHE", str(tmp_path / "cache-b"))
    second = resolve_weights(url, sha256=_sha(data))
    assert first.is_relative_to(tmp_path / "cache-a") and second.is_relative_to(tmp_path / "cache-b")
    assert first.read_bytes() == second.read_bytes() == data
    assert http_server[2][request] == 2


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"ctx": torch.randn(3, 4, generator=g), "prefix": torch.randn(2, generator=g)}


def test_load_state_dict_pth_with_key(tmp_path):
    params = _tensors(0)
    path = tmp_path / "plus.pth"
    torch.save({"params": params}, path)
    loaded = load_state_dict(path, key="params")
    assert set(loaded) == set(params) and all(torch.equal(loaded[k], params[k]) for k in params)
    with pytest.raises(WeightsError, match=r"no top-level key 'state'.*\['params'\]"):
        load_state_dict(path, key="state")
    with pytest.raises(WeightsError, match="key="):
        load_state_dict(path)


def test_load_state_dict_safetensors(tmp_path):
    tensors = _tensors(1)
    path = tmp_path / "m.safetensors"
    save_file({"net.ctx": tensors["ctx"], "net.prefix": tensors["prefix"], "head.w": torch.ones(2)}, path)
    flat = load_state_dict(path)
    assert set(flat) == {"net.ctx", "net.prefix", "head.w"}
    picked = load_state_dict(path, key="net")
    assert set(picked) == {"ctx", "prefix"} and torch.equal(picked["ctx"], tensors["ctx"])
    with pytest.raises(WeightsError, match=r"\['head', 'net'\]"):
        load_state_dict(path, key="params")


class _Payload:
    """Unpickling this runs Path.touch on the marker: it must never happen through load_state_dict."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_weights_only_is_enforced(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="weights_only=True") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load would have run it
    assert marker.exists()


@pytest.mark.parametrize("seed", range(20))
def test_garbage_checkpoint_is_a_clear_error(tmp_path, seed):
    path = tmp_path / "garbage.pth"
    path.write_bytes(random.Random(seed).randbytes(64))  # seeded: each failure mode reproduces
    with pytest.raises(WeightsError, match="garbage.pth"):
        load_state_dict(path)
