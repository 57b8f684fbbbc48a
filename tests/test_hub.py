"""What hub-backed plugins say when the hub is cached, switched off, or out of reach."""

from __future__ import annotations

import socket

import pytest

from prh_bench_plugins import shared


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port  # nothing listens there any more: connections are refused at once


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch, tmp_path):
    for var in shared.OFFLINE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    shared.reachable.cache_clear()
    yield
    shared.reachable.cache_clear()


def test_unreachable_hub_is_one_reason(monkeypatch, closed_port):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    ok, why = shared.weights_availability("vit_x", "timm/vit_x")
    assert not ok
    assert why.startswith("the Hugging Face hub cannot be reached")
    assert "huggingface-cli download timm/vit_x" in why


def test_offline_variable_wins(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, why = shared.weights_availability("m", "org/m")
    assert not ok and "HF_HUB_OFFLINE is set" in why


def test_reachable_hub_downloads_on_first_use(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert shared.weights_availability("m", "org/m") == (
            True,
            "downloads from the Hugging Face hub on first use",
        )


def test_cached_weights_are_available_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "hf" / "hub" / "models--org--m" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    refs = tmp_path / "hf" / "hub" / "models--org--m" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    assert shared.cached_commit("org/m") == "abc123"
    assert shared.weights_availability("m", "org/m") == (True, "")
    assert shared.hub_cache() == tmp_path / "hf" / "hub"
