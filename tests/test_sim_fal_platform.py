"""fal beyond the queue: the Platform API's request history and prices, and fal storage uploads
(both of fal-client's flows), whose file URLs fal submits accept as inputs."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest
from test_sim_helpers import (KLING, PICTURE, PIKA, client, fk, make_sim, ok_kling, submit, until, wait_fal)

__all__ = ["client", "make_sim"]  # fixtures, imported to be used here


def history(client: httpx.Client, sim, **params) -> httpx.Response:
    return client.get(f"{sim.base_url}/fal-api/v1/models/requests/by-endpoint", headers=fk(sim), params=params)


# -- request history --------------------------------------------------------------------------------


def test_history_lists_requests_by_endpoint_with_inputs_status_and_times(make_sim, client):
    sim = make_sim(concurrency={"fal": 1}, latency={"default": {"min": 0.03, "max": 0.08}, "fal-pika-v2.2": 5.0})
    done = submit(client, sim, ok_kling("a cup"))
    wait_fal(client, sim, done)
    sim.inject("task_failed", on="fal.submit", failure_code="SAFETY.INPUT.TEXT")
    failed = submit(client, sim, ok_kling("a bad cup"))
    wait_fal(client, sim, failed)
    running = submit(client, sim, {"prompt": "rain", "duration": 5}, PIKA)
    queued = submit(client, sim, {"prompt": "snow", "duration": 5}, PIKA)  # behind `running`

    kling = history(client, sim, endpoint_id=KLING, expand="payloads").json()
    assert kling["has_more"] is False and kling["next_cursor"] is None
    by_id = {item["request_id"]: item for item in kling["items"]}
    assert set(by_id) == {done["request_id"], failed["request_id"]}
    assert [item["request_id"] for item in kling["items"]] == [failed["request_id"], done["request_id"]]  # newest end first
    ok, bad = by_id[done["request_id"]], by_id[failed["request_id"]]
    assert ok["endpoint_id"] == KLING and ok["json_input"] == ok_kling("a cup") and ok["status_code"] == 200
    assert ok["sent_at"] <= ok["started_at"] <= ok["ended_at"] and ok["duration"] > 0
    assert ok["json_output"]["video"]["content_type"] == "video/mp4"
    assert bad["status_code"] == 422 and bad["json_output"]["detail"][0]["type"] == "content_policy_violation"

    pika = history(client, sim, endpoint_id=PIKA, expand="payloads").json()["items"]
    waiting = next(item for item in pika if item["request_id"] == queued["request_id"])
    assert waiting["ended_at"] is None and waiting["status_code"] is None and waiting["started_at"] is None
    assert waiting["json_input"] == {"prompt": "snow", "duration": 5} and waiting["json_output"] is None
    assert {item["request_id"] for item in pika} == {running["request_id"], queued["request_id"]}

    plain = history(client, sim, endpoint_id=KLING).json()["items"][0]
    assert "json_input" not in plain and "json_output" not in plain  # payloads only when expanded
    both = history(client, sim, endpoint_id=f"{KLING},{PIKA}").json()["items"]
    assert len(both) == 4 and len(history(client, sim, endpoint_id=[KLING, PIKA]).json()["items"]) == 4


def test_history_filters_and_pages(sim, client):
    ids = []
    for i in range(5):
        queued = submit(client, sim, ok_kling(f"cup {i}"))
        wait_fal(client, sim, queued)
        ids.append(queued["request_id"])
    sim.inject("task_failed", on="fal.submit", failure_code="INTERNAL")
    broken = submit(client, sim, ok_kling("broken"))
    wait_fal(client, sim, broken)
    seen, cursor = [], None
    for _ in range(4):  # 6 requests, 2 a page: three pages
        page = history(client, sim, endpoint_id=KLING, limit=2, **({"cursor": cursor} if cursor else {})).json()
        seen += [item["request_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert cursor is None and sorted(seen) == sorted([*ids, broken["request_id"]])
    assert base64.b64decode(history(client, sim, endpoint_id=KLING, limit=2).json()["next_cursor"]) == b"2"
    only = history(client, sim, endpoint_id=KLING, request_id=ids[2]).json()["items"]
    assert [item["request_id"] for item in only] == [ids[2]]
    assert [i["request_id"] for i in history(client, sim, endpoint_id=KLING, status="error").json()["items"]] == [broken["request_id"]]
    assert len(history(client, sim, endpoint_id=KLING, status="success").json()["items"]) == 5
    assert history(client, sim, endpoint_id=KLING, start="2000-01-01", end="2000-01-02").json()["items"] == []
    durations = [item["duration"] for item in history(client, sim, endpoint_id=KLING, sort_by="duration").json()["items"]]
    assert durations == sorted(durations, reverse=True)


@pytest.mark.parametrize("params", [{}, {"endpoint_id": KLING, "limit": 0}, {"endpoint_id": KLING, "limit": 101},
                                    {"endpoint_id": KLING, "cursor": "!!"}, {"endpoint_id": KLING, "status": "fine"},
                                    {"endpoint_id": KLING, "start": "yesterday"}, {"endpoint_id": KLING, "sort_by": "cost"},
                                    {"endpoint_id": ",".join([KLING] * 51)}])
def test_history_refuses_bad_parameters_naming_them(sim, client, params):
    refused = history(client, sim, **params)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][0] == "query"


def test_platform_api_needs_the_fal_key(sim, client):
    for path in ("models/requests/by-endpoint", "models/pricing"):
        assert client.get(f"{sim.base_url}/fal-api/v1/{path}", params={"endpoint_id": KLING}).status_code == 401
    assert client.get(f"{sim.base_url}/fal-api/v1/models/nothing", headers=fk(sim)).status_code == 404


def test_pricing_gives_unit_price_and_unit_per_endpoint(sim, client):
    asked = [PIKA, "fal-ai/veo3/fast", KLING, "fal-ai/no-such-model"]
    prices = client.get(f"{sim.base_url}/fal-api/v1/models/pricing", headers=fk(sim), params={"endpoint_id": ",".join(asked)}).json()
    assert prices["has_more"] is False and prices["next_cursor"] is None
    assert prices["prices"] == [  # Kling has no price in the manifests; unknown endpoints are left out
        {"endpoint_id": PIKA, "unit_price": 0.2, "unit": "video", "currency": "USD"},
        {"endpoint_id": "fal-ai/veo3/fast", "unit_price": 0.4, "unit": "second", "currency": "USD"},
    ]


# -- storage ----------------------------------------------------------------------------------------


def test_cdn_upload_as_fal_client_does_it_serves_the_file_and_fal_accepts_it(sim, client):
    data = PICTURE.read_bytes()
    token = client.post(f"{sim.base_url}/fal-rest/storage/auth/token", headers=fk(sim),
                        params={"storage_type": "fal-cdn-v3"}, json={}).json()
    assert token["token_type"] == "Bearer" and token["base_url"] == f"{sim.base_url}/fal-cdn" and "+00:00" in token["expires_at"]
    auth = {"Authorization": f"{token['token_type']} {token['token']}"}
    forged = client.post(f"{sim.base_url}/fal-cdn/files/upload", headers={"Authorization": "Bearer 1.x"}, content=data)
    assert forged.status_code == 401
    uploaded = client.post(f"{sim.base_url}/fal-cdn/files/upload", content=data,
                           headers={**auth, "Content-Type": "image/png", "X-Fal-File-Name": "sneaker shot.png"}).json()
    served = client.get(uploaded["access_url"])  # public, as fal's media URLs are
    assert served.status_code == 200 and served.content == data and served.headers["content-type"] == "image/png"
    queued = submit(client, sim, {"prompt": "a sneaker", "image_url": uploaded["access_url"]})
    final, _ = wait_fal(client, sim, queued)
    assert "error" not in final.json()


def test_storage_initiate_and_signed_put_then_the_file_url_is_an_input(sim, client):
    data = hashlib.sha256(b"clip").digest() * 64
    ticket = client.post(f"{sim.base_url}/fal-rest/storage/upload/initiate", headers=fk(sim), params={"storage_type": "gcs"},
                         json={"file_name": "clip.mp4", "content_type": "video/mp4"}).json()
    assert client.get(ticket["file_url"]).status_code == 404  # nothing there before the PUT
    tampered = ticket["upload_url"].replace("clip.mp4", "other.mp4")
    assert client.put(tampered, content=data, headers={"Content-Type": "video/mp4"}).status_code == 403
    assert client.put(ticket["upload_url"], content=data, headers={"Content-Type": "video/mp4"}).status_code == 200
    assert client.get(ticket["file_url"]).content == data
    assert client.post(f"{sim.base_url}/fal-rest/storage/upload/initiate", json={}).status_code == 401


def test_fal_fails_a_request_whose_storage_input_does_not_exist(sim, client):
    missing = f"{sim.base_url}/fal-cdn/files/0123abcd/never.png"
    queued = submit(client, sim, {"prompt": "a sneaker", "image_url": missing})
    final, _ = wait_fal(client, sim, queued)
    assert final.json()["error_type"] == "bad_request"
    result = client.get(queued["response_url"], headers=fk(sim))
    assert result.status_code == 422 and "could not be downloaded" in result.json()["detail"][0]["msg"]


def test_storage_facts_survive_a_restart(make_sim, tmp_path, client):
    path = str(tmp_path / "state.jsonl")
    a = make_sim(state_path=path)
    ticket = client.post(f"{a.base_url}/fal-rest/storage/upload/initiate", headers=fk(a),
                         json={"file_name": "a.png", "content_type": "image/png"}).json()
    assert client.put(ticket["upload_url"], content=PICTURE.read_bytes()).status_code == 200
    a.stop()
    b = make_sim(state_path=path)
    with httpx.Client(timeout=5) as fresh:
        queued = submit(fresh, b, {"prompt": "a sneaker", "image_url": ticket["file_url"]})
        assert "error" not in until(lambda: _completed(fresh, b, queued))
        assert fresh.get(ticket["file_url"]).status_code == 404  # the bytes are not kept


def _completed(client: httpx.Client, sim, queued: dict) -> dict | None:
    status = client.get(queued["status_url"], headers=fk(sim)).json()
    return status if status["status"] == "COMPLETED" else None
