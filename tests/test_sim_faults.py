"""Fault injection: every kind at every point it applies to, scripted, drawn at a rate, or posted
to the control API, and the misbehaviours clients must survive (garbled headers, answers that are
not objects, redirects, compressed downloads)."""

from __future__ import annotations

import gzip
import hashlib
import time
from decimal import Decimal

import httpx
import pytest
from test_sim_helpers import (KLING, TURBO_BODY, client, create, fk, ledger_entry, make_sim, ok_kling, rw, submit, wait_fal,
                              wait_runway)

from runner.sim import KINDS, POINTS, SimConfig, payload_sha256
from runner.sim.__main__ import build_config, parser
from runner.sim.media import mp4_info

__all__ = ["client", "make_sim"]  # fixtures, imported to be used here


# -- the classic kinds ------------------------------------------------------------------------------


def test_http_429_carries_retry_after_and_creates_nothing(sim, client):
    sim.inject("http_429", on="runway.create", retry_after=2)
    refused = create(client, sim)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "2" and "error" in refused.json()
    assert sim.ledger() == []
    assert create(client, sim).status_code == 200  # count=1: the next one goes through


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_faults_on_both_providers(sim, client, status):
    task_id = create(client, sim).json()["id"]
    sim.inject(f"http_{status}", on="runway.poll")
    response = client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim))
    assert response.status_code == status and "error" in response.json()
    queued = submit(client, sim, ok_kling())
    sim.inject(f"http_{status}", on="fal.status")
    response = client.get(queued["status_url"], headers=fk(sim))
    assert response.status_code == status and "detail" in response.json()


def test_fal_ingress_5xx_looks_like_nginx(sim, client):
    queued = submit(client, sim, ok_kling())
    sim.inject("http_502", on="fal.status", ingress=True)
    response = client.get(queued["status_url"], headers=fk(sim))
    assert response.status_code == 502 and "nginx" in response.text and "x-fal-request-id" not in response.headers


def test_reset_drops_the_connection(sim, client):
    task_id = create(client, sim).json()["id"]
    sim.inject("reset", on="runway.poll")
    with pytest.raises(httpx.TransportError):
        client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim))
    assert client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).status_code == 200


def test_hang_outlasts_the_client_timeout(sim, client):
    queued = submit(client, sim, ok_kling())
    sim.inject("hang", on="fal.status", seconds=3)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.get(queued["status_url"], headers=fk(sim), timeout=0.3)
    assert time.monotonic() - started < 2
    assert client.get(queued["status_url"], headers=fk(sim)).status_code in (200, 202)


def test_malformed_json(sim, client):
    task_id = create(client, sim).json()["id"]
    sim.inject("malformed_json", on="runway.poll")
    response = client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_expired_url_faults(sim, client):
    task_id = create(client, sim).json()["id"]
    wait_runway(client, sim, task_id)
    sim.inject("expired_url", on="runway.poll")
    stale = client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).json()["output"][0]
    assert client.get(stale).status_code == 403
    fresh = client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).json()["output"][0]
    sim.inject("expired_url", on="download")
    assert client.get(fresh).status_code == 403
    assert client.get(fresh).status_code == 200
    queued = submit(client, sim, ok_kling())
    wait_fal(client, sim, queued)
    sim.inject("expired_url", on="fal.result")
    url = client.get(queued["response_url"], headers=fk(sim)).json()["video"]["url"]
    assert client.get(url).status_code == 403


def test_truncated_download_is_detected(sim, client):
    task_id = create(client, sim).json()["id"]
    url = wait_runway(client, sim, task_id)[0]["output"][0]
    sim.inject("truncated", on="download", count=2)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("GET", url) as response:
            expected = int(response.headers["content-length"])
            for chunk in response.iter_bytes():
                received += chunk
    assert 0 < len(received) < expected
    with pytest.raises(ValueError):
        mp4_info(received)
    assert mp4_info(client.get(url).content)["duration"] == 5.0


def test_after_accept_faults_record_the_task_though_the_client_saw_an_error(sim, client):
    sim.inject("http_503", on="runway.create", after_accept=True)
    assert create(client, sim).status_code == 503
    (entry,) = sim.ledger()
    assert entry["payload_sha256"] == payload_sha256(TURBO_BODY) and entry["provider"] == "runway"
    sim.inject("reset", on="fal.submit", after_accept=True)
    with pytest.raises(httpx.TransportError):
        client.post(f"{sim.fal_url}/{KLING}", headers=fk(sim), json=ok_kling("lost answer"))
    assert [e["payload_sha256"] for e in sim.ledger()][1] == payload_sha256(ok_kling("lost answer"))
    sim.inject("hang", on="runway.create", after_accept=True, seconds=2)
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{sim.runway_url}/v1/image_to_video", headers=rw(sim), json=TURBO_BODY, timeout=0.3)
    assert len(sim.ledger()) == 3
    for entry in sim.ledger():  # the tasks really run, and bill, although nobody saw their ids
        deadline = time.monotonic() + 5
        while ledger_entry(sim, entry["task_id"])["status"] != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.02)
    assert Decimal(ledger_entry(sim, sim.ledger()[0]["task_id"])["billed_usd"]) == Decimal("0.25")


def test_faults_filter_by_model_and_fire_count_times(sim, client):
    sim.inject("http_500", on="runway.create", model="gen4.5", count=2)
    assert create(client, sim).status_code == 200  # gen4_turbo is not affected
    body = {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 2}
    assert [create(client, sim, body, "text_to_video").status_code for _ in range(3)] == [500, 500, 200]


def test_fault_rates_from_config_and_scripted_faults_over_http(make_sim, client):
    sim = make_sim(faults={"runway.poll": {"http_503": 1.0}})
    task_id = create(client, sim).json()["id"]
    assert {client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).status_code for _ in range(5)} == {503}
    added = client.post(f"{sim.base_url}/_sim/faults", json={"kind": "http_504", "on": "fal.submit", "count": 2})
    assert added.status_code == 201 and added.json()[0]["count"] == 2
    assert client.post(f"{sim.fal_url}/{KLING}", headers=fk(sim), json=ok_kling()).status_code == 504
    assert client.post(f"{sim.base_url}/_sim/faults", json={"kind": "truncated", "on": "fal.submit"}).status_code == 400
    assert client.delete(f"{sim.base_url}/_sim/faults").status_code == 204
    assert client.post(f"{sim.fal_url}/{KLING}", headers=fk(sim), json=ok_kling()).status_code == 200
    assert len(client.get(f"{sim.base_url}/_sim/ledger").json()) == 2
    stats = client.get(f"{sim.base_url}/_sim/stats").json()
    assert stats["providers"]["runway"]["requests"]["runway.poll"] == 5 and stats["server"]["requests"] > 0


def test_inject_rejects_impossible_faults_and_clear_drops_pending_ones(sim, client):
    sim.inject("http_500", on="runway.create", count=5)
    sim.clear_faults()
    assert create(client, sim).status_code == 200
    for kind, on, extra in (("truncated", "runway.poll", {}), ("task_failed", "download", {}),
                            ("melt", "download", {}), ("http_500", "nowhere", {}),
                            ("http_500", "runway.poll", {"after_accept": True})):
        with pytest.raises(ValueError):
            sim.inject(kind, on=on, **extra)


# -- what a client must survive ---------------------------------------------------------------------


def prepare(client: httpx.Client, sim, point: str):
    """What a request at `point` needs (a task, a finished task, ...), then the request itself, to
    be sent once a fault is scripted there (setting up sends requests at other points only)."""
    runway_task = lambda: create(client, sim).json()["id"]  # noqa: E731
    if point == "runway.create":
        return lambda: create(client, sim)
    if point == "runway.upload":
        return lambda: client.post(f"{sim.runway_url}/v1/uploads", headers=rw(sim), json={"filename": "a.png", "type": "ephemeral"})
    if point == "runway.cancel":
        task_id = runway_task()
        return lambda: client.delete(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim))
    if point in ("runway.poll", "download"):
        task, _ = wait_runway(client, sim, runway_task())
        if point == "download":
            return lambda: client.get(task["output"][0])
        return lambda: client.get(f"{sim.runway_url}/v1/tasks/{task['id']}", headers=rw(sim))
    if point == "fal.submit":
        return lambda: client.post(f"{sim.fal_url}/{KLING}", headers=fk(sim), json=ok_kling())
    if point == "fal.upload":
        return lambda: client.post(f"{sim.base_url}/fal-rest/storage/auth/token", headers=fk(sim),
                                   params={"storage_type": "fal-cdn-v3"}, json={})
    queued = submit(client, sim, ok_kling())
    if point == "fal.result":
        wait_fal(client, sim, queued)
    url = {"fal.status": queued["status_url"], "fal.stream": queued["status_url"] + "/stream", "fal.result": queued["response_url"],
           "fal.cancel": queued["cancel_url"]}[point]
    return lambda: client.request("PUT" if point == "fal.cancel" else "GET", url, headers=fk(sim))


@pytest.mark.parametrize("point", [p for p in POINTS if p != "download"])
def test_not_object_answers_valid_json_that_is_not_an_object_at_every_json_point(sim, client, point):
    value = [[], "ok", None][POINTS.index(point) % 3]
    send = prepare(client, sim, point)
    sim.inject("not_object", on=point, value=value)
    response = send()
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == value
    second = send()  # count=1: the next one is answered properly
    if second.headers.get("content-type") == "text/event-stream":  # fal's status stream, whole
        assert second.text.startswith("data: {") and '"COMPLETED"' in second.text
    else:
        assert second.status_code == 204 or isinstance(second.json(), dict)


@pytest.mark.parametrize("point", POINTS)
def test_redirect_at_every_point_leads_somewhere_unrelated(sim, client, point):
    send = prepare(client, sim, point)
    sim.inject("redirect", on=point, status=307 if point.endswith(("create", "submit")) else 302)
    response = send()
    assert response.status_code in (302, 307) and response.headers["location"] == "/_sim/redirected"
    assert response.next_request is not None  # a client that follows it ...
    assert client.send(response.next_request).status_code == 404  # ... reaches nothing of use


@pytest.mark.parametrize("kind", ["not_object", "redirect"])
def test_after_accept_not_object_and_redirect_accept_the_task_first(sim, client, kind):
    sim.inject(kind, on="runway.create", after_accept=True)
    answered = create(client, sim)
    assert answered.status_code in (200, 302) and not isinstance(_json_or_none(answered), dict)
    sim.inject(kind, on="fal.submit", after_accept=True)
    client.post(f"{sim.fal_url}/{KLING}", headers=fk(sim), json=ok_kling("lost answer"))
    hashes = [entry["payload_sha256"] for entry in sim.ledger()]
    assert hashes == [payload_sha256(TURBO_BODY), payload_sha256(ok_kling("lost answer"))]


def _json_or_none(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return None


def test_gzip_download_is_compressed_on_the_wire_and_decodes_to_the_file(sim, client):
    task, _ = wait_runway(client, sim, create(client, sim).json()["id"])
    plain = client.get(task["output"][0]).content
    sim.inject("gzip", on="download")
    with client.stream("GET", task["output"][0]) as response:
        raw = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) == len(raw) != len(plain)
    assert gzip.decompress(raw) == plain
    sim.inject("gzip", on="download")
    decoded = client.get(task["output"][0]).content  # a client that decodes as HTTP says saves the file
    assert hashlib.sha256(decoded).hexdigest() == hashlib.sha256(plain).hexdigest()


@pytest.mark.parametrize("status", [429, 503])
def test_garbled_retry_after_and_retry_hints_are_sent_verbatim(sim, client, status):
    send = prepare(client, sim, "runway.poll")
    sim.inject(f"http_{status}", on="runway.poll", retry_after="soon", retry_after_ms="1500", should_retry=False)
    response = send()
    assert response.status_code == status and response.headers["retry-after"] == "soon"
    assert response.headers["retry-after-ms"] == "1500" and response.headers["x-should-retry"] == "false"
    send = prepare(client, sim, "fal.status")
    sim.inject(f"http_{status}", on="fal.status", retry_after="in a while")
    assert send().headers["retry-after"] == "in a while"
    sim.inject("http_503", on="fal.status")
    assert "retry-after" not in send().headers  # only a 429 has one unless asked


def test_fault_settings_are_checked(sim):
    for kind, on, detail in (("redirect", "runway.poll", {"status": 200}), ("http_503", "runway.poll", {"retry_afer": 1}),
                             ("http_503", "runway.poll", {"should_retry": "maybe"}), ("not_object", "fal.status", {"value": {}}),
                             ("hang", "fal.status", {"seconds": "long"}), ("gzip", "download", {"level": 9}),
                             ("truncated", "download", {"fraction": True}), ("gzip", "runway.poll", {})):
        with pytest.raises(ValueError):
            sim.inject(kind, on=on, **detail)
    with pytest.raises(ValueError, match="takes no setting"):
        SimConfig(fault_details={"gzip": {"level": 9}})
    with pytest.raises(ValueError, match="unknown fault kind"):
        SimConfig(fault_details={"zip": {}})
    assert {"not_object", "redirect", "gzip"} <= set(KINDS) and "fal.upload" in POINTS


def test_new_kinds_at_a_rate_with_settings_from_the_config(make_sim, client):
    sim = make_sim(faults={"download": {"gzip": 1.0}, "fal.status": {"not_object": 1.0}, "runway.poll": {"http_503": 1.0}},
                   fault_details={"not_object": {"value": "ok"}, "http_503": {"retry_after": "soon"}})
    task_id = create(client, sim).json()["id"]
    poll = client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim))
    assert poll.status_code == 503 and poll.headers["retry-after"] == "soon"
    queued = submit(client, sim, ok_kling())
    assert client.get(queued["status_url"], headers=fk(sim)).json() == "ok"
    wait_fal_result = lambda: client.get(queued["response_url"], headers=fk(sim))  # noqa: E731
    deadline = time.monotonic() + 5
    while (result := wait_fal_result()).status_code == 400 and time.monotonic() < deadline:
        time.sleep(0.02)
    download = client.get(result.json()["video"]["url"])
    assert download.headers["content-encoding"] == "gzip" and download.content[4:8] == b"ftyp"
    unset = make_sim(faults={"fal.status": {"not_object": 1.0}})  # values drawn from the usual suspects
    queued = submit(client, unset, ok_kling())
    assert {repr(client.get(queued["status_url"], headers=fk(unset)).json()) for _ in range(12)} <= {"[]", "'ok'", "None", "0"}


def test_new_kinds_over_the_control_api_and_the_command_line(sim, client):
    added = client.post(f"{sim.base_url}/_sim/faults", json=[{"kind": "gzip", "on": "download"},
                                                             {"kind": "redirect", "on": "fal.cancel", "status": 303}])
    assert added.status_code == 201 and [f["kind"] for f in added.json()] == ["gzip", "redirect"]
    refused = client.post(f"{sim.base_url}/_sim/faults", json={"kind": "redirect", "on": "runway.poll", "status": 200})
    assert refused.status_code == 400 and "status must be one of" in refused.json()["error"]
    config = build_config(parser().parse_args([
        "--fault", "download:gzip=0.1", "--fault-detail", "http_503:retry_after=soon", "--fault-detail", "redirect:status=307",
    ]))
    assert config.faults == {"download": {"gzip": 0.1}}
    assert config.fault_details == {"http_503": {"retry_after": "soon"}, "redirect": {"status": 307}}
    with pytest.raises(ValueError):
        build_config(parser().parse_args(["--fault-detail", "redirect:status"]))


def test_fal_storage_upload_point_takes_faults(sim, client):
    token = prepare(client, sim, "fal.upload")
    sim.inject("http_503", on="fal.upload")
    assert token().status_code == 503
    assert token().json()["token_type"] == "Bearer"
