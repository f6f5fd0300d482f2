"""API keys: requests need a valid key once keys exist; keys limit models; admin routes need an admin key."""

from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest
from helpers import MODEL, create_key, keepwarm, start_server, state_dir


def _embed(url: str, key: str | None, model: str = MODEL) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{url}/v1/embeddings", json={"model": model, "input": "hello"}, headers=headers, timeout=60
    )


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    return error


def test_request_without_a_key_is_401_invalid_api_key(keyed_server) -> None:  # noqa: ANN001
    response = _embed(keyed_server.url, None)
    _error(response, 401, "invalid_api_key")
    assert response.headers["www-authenticate"] == "Bearer"


def test_wrong_key_is_401_and_never_echoed(keyed_server) -> None:  # noqa: ANN001
    guess = "kw-this-is-not-a-real-key-0123456789abcdefghijk"
    error = _error(_embed(keyed_server.url, guess), 401, "invalid_api_key")
    assert guess not in error["message"] and guess[:11] not in error["message"]


def test_openai_client_with_a_key_is_served(keyed_server) -> None:  # noqa: ANN001
    client = openai.OpenAI(
        base_url=keyed_server.v1, api_key=create_key(keyed_server.data_dir, "client"), max_retries=0
    )
    result = client.embeddings.create(model=MODEL, input=["hello", "world"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 384


def test_openai_client_with_a_wrong_key_raises_authentication_error(keyed_server) -> None:  # noqa: ANN001
    client = openai.OpenAI(base_url=keyed_server.v1, api_key="kw-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.embeddings.create(model=MODEL, input="hello")
    assert raised.value.code == "invalid_api_key"


def test_a_key_may_use_only_its_models(keyed_server) -> None:  # noqa: ANN001
    key = create_key(keyed_server.data_dir, "restricted", "--models", "some-other-model")
    error = _error(_embed(keyed_server.url, key), 403, "model_not_allowed")
    assert error["param"] == "model"
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{keyed_server.v1}/models", headers=headers).json()["data"] == []
    _error(httpx.get(f"{keyed_server.v1}/models/{MODEL}", headers=headers), 403, "model_not_allowed")


def test_a_key_listing_an_alias_or_name_may_use_the_model(keyed_server) -> None:  # noqa: ANN001
    key = create_key(keyed_server.data_dir, "minilm-only", "--models", f"other,{MODEL}")
    assert _embed(keyed_server.url, key).status_code == 200
    listed = httpx.get(f"{keyed_server.v1}/models", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert [m["id"] for m in listed] == [MODEL]


def test_a_key_created_or_revoked_while_serving_applies_at_once(keyed_server) -> None:  # noqa: ANN001
    key = create_key(keyed_server.data_dir, "short-lived")
    assert _embed(keyed_server.url, key).status_code == 200
    keepwarm("keys", "revoke", "short-lived", "--data-dir", str(keyed_server.data_dir))
    _error(_embed(keyed_server.url, key), 401, "invalid_api_key")


def test_admin_routes_need_an_admin_key(keyed_server) -> None:  # noqa: ANN001
    url = f"{keyed_server.url}/admin/usage"
    plain = create_key(keyed_server.data_dir, "not-admin")
    admin = create_key(keyed_server.data_dir, "second-admin", "--admin")
    _error(httpx.get(url), 401, "invalid_api_key")
    _error(httpx.get(url, headers={"Authorization": f"Bearer {plain}"}), 403, "admin_key_required")
    assert httpx.get(url, headers={"Authorization": f"Bearer {admin}"}).status_code == 200


def test_admin_reload_needs_an_admin_key(keyed_server) -> None:  # noqa: ANN001
    url = f"{keyed_server.url}/admin/reload"
    plain = create_key(keyed_server.data_dir, "not-admin-reload")
    admin = create_key(keyed_server.data_dir, "admin-reload", "--admin")
    _error(httpx.post(url), 401, "invalid_api_key")
    _error(httpx.post(url, headers={"Authorization": f"Bearer {plain}"}), 403, "admin_key_required")
    reloaded = httpx.post(url, headers={"Authorization": f"Bearer {admin}"}, timeout=120)
    assert reloaded.status_code == 200 and reloaded.json()["status"] == "reloaded"


def test_a_404_names_only_the_models_the_key_may_use(keyed_server) -> None:  # noqa: ANN001
    restricted = create_key(keyed_server.data_dir, "elsewhere-only", "--models", "some-other-model")
    everything = create_key(keyed_server.data_dir, "all-models")
    pinned = f"{MODEL}@000000000000"  # a served name, a version that is not
    for key, named in ((restricted, False), (everything, True)):
        headers = {"Authorization": f"Bearer {key}"}
        answers = [
            _embed(keyed_server.url, key, "no-such-model"),
            _embed(keyed_server.url, key, pinned),
            httpx.get(f"{keyed_server.v1}/models/no-such-model", headers=headers),
        ]
        for answer in answers:
            message = _error(answer, 404, "model_not_found")["message"]
            assert (MODEL in message.replace(pinned, "")) is named, message
        versions_listed = "versions of" in answers[1].json()["error"]["message"]
        assert versions_listed is named


def test_probes_and_metrics_need_no_key(keyed_server) -> None:  # noqa: ANN001
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{keyed_server.url}{path}").status_code == 200, path


def test_without_keys_a_loopback_server_is_open_and_says_so(server) -> None:  # noqa: ANN001
    assert _embed(server.url, None).status_code == 200
    assert _embed(server.url, "anything").status_code == 200  # the openai client always sends some key
    assert "WITHOUT authentication, on loopback only" in server.logs()


def test_the_first_key_closes_an_open_server(server, data_dir, log_dir, tmp_path) -> None:  # noqa: ANN001
    running = start_server(state_dir(data_dir, tmp_path / "data"), log_dir)
    try:
        assert _embed(running.url, None).status_code == 200
        assert httpx.get(f"{running.url}/admin/usage").status_code == 200  # open means open
        key = create_key(running.data_dir, "first")
        _error(_embed(running.url, None), 401, "invalid_api_key")
        assert _embed(running.url, key).status_code == 200
        _error(httpx.get(f"{running.url}/admin/usage"), 401, "invalid_api_key")
    finally:
        running.stop()


def test_serving_beyond_loopback_without_keys_is_refused(tmp_path) -> None:  # noqa: ANN001
    result = keepwarm("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path), check=False)
    assert result.returncode == 2
    assert "no API keys exist" in result.stderr and "--allow-unauthenticated" in result.stderr


def test_allow_unauthenticated_lets_a_keyless_server_start_beyond_loopback(own_data_dir) -> None:  # noqa: ANN001
    """The flag passes the start-up refusal. The port is taken (bound, never listening), so the server
    stops at binding, with exit status 1: nothing is ever reachable beyond loopback during the test."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        port = str(taken.getsockname()[1])
        result = keepwarm(
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            port,
            "--allow-unauthenticated",
            "--data-dir",
            str(own_data_dir),
            check=False,
        )
    assert "serving WITHOUT authentication on 0.0.0.0 (--allow-unauthenticated)" in result.stderr
    assert "no API keys exist, and --host" not in result.stderr
    assert "address already in use" in result.stderr and "listening on" not in result.stderr
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_keys_list_shows_settings_but_never_secrets(tmp_path) -> None:  # noqa: ANN001
    secret = create_key(tmp_path, "listed", "--models", "a,b", "--rpm", "7", "--admin")
    keepwarm("keys", "revoke", "listed", "--data-dir", str(tmp_path))
    listed = json.loads(keepwarm("keys", "list", "--json", "--data-dir", str(tmp_path)).stdout)
    assert [(k["name"], k["models"], k["rpm"], k["admin"]) for k in listed] == [
        ("listed", ["a", "b"], 7, True)
    ]
    assert listed[0]["revoked_at"] and listed[0]["prefix"] == secret[:11]
    table = keepwarm("keys", "list", "--data-dir", str(tmp_path)).stdout
    assert "listed" in table and secret not in table and secret not in json.dumps(listed)
