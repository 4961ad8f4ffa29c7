"""What the providers refuse or limit, as their APIs do: Runway's input URL rules and data URI size,
its rolling daily generation limit and how `GET /v1/organization` reports it, and fal's
fallback-disable header under both of its names."""

from __future__ import annotations

import pytest
from test_sim_helpers import TURBO_BODY, client, create, ledger_entry, make_sim, ok_kling, rw, submit, until

from runner.sim.runway import MAX_DATA_URI_CHARS

__all__ = ["client", "make_sim"]  # fixtures, imported to be used here
PNG = "data:image/png;base64,"


@pytest.mark.parametrize(("url", "why"), [
    ("http://example.com/a.jpg", "HTTPS"),
    ("https://93.184.216.34/a.jpg", "not an IP address"),
    ("https://[2606:2800:220:1::248]/a.jpg", "not an IP address"),
    ("https://localhost/a.jpg", "domain"),
    ("https://example.com/" + "a" * 2048, "2048"),
])
def test_runway_refuses_input_urls_that_are_not_https_on_a_domain(sim, client, url, why):
    refused = create(client, sim, {**TURBO_BODY, "promptImage": url})
    assert refused.status_code == 400 and refused.json()["error"] == "Validation of body failed"
    (issue,) = refused.json()["issues"]
    assert issue["path"] == ["promptImage"] and why in issue["message"]
    assert sim.ledger() == []
    assert create(client, sim, {**TURBO_BODY, "promptImage": "https://cdn.example.com/a.jpg"}).status_code == 200


def test_runway_data_uris_up_to_5_mb_whatever_the_manifest_says(sim, client):
    at_limit = PNG + "A" * (MAX_DATA_URI_CHARS - len(PNG))
    assert create(client, sim, {**TURBO_BODY, "promptImage": at_limit}).status_code == 200
    over = create(client, sim, {**TURBO_BODY, "promptImage": at_limit + "A"})
    assert over.status_code == 400 and "upload larger files" in over.json()["issues"][0]["message"]
    assert len(sim.ledger()) == 1


def test_runway_daily_limit_is_a_rolling_window(make_sim, client):
    sim = make_sim(daily_limit={"gen4_turbo": 2}, daily_window_s=1.0)
    assert [create(client, sim).status_code for _ in range(2)] == [200, 200]
    refused = create(client, sim)
    assert refused.status_code == 429 and refused.json() == {"error": "Your daily task limit has been reached."}
    assert int(refused.headers["retry-after"]) >= 1
    org = client.get(f"{sim.runway_url}/v1/organization", headers=rw(sim)).json()
    assert org["tier"]["models"]["gen4_turbo"]["maxDailyGenerations"] == 2
    assert org["usage"]["models"]["gen4_turbo"] == {"dailyGenerations": 2}
    until(lambda: create(client, sim).status_code == 200, what="the window to roll")  # refusals do not count
    assert len(sim.ledger()) == 3


def test_organization_reports_no_limit_as_null_and_counts_usage_per_model(make_sim, client):
    sim = make_sim(daily_limit={"runway": 10})
    create(client, sim)
    org = client.get(f"{sim.runway_url}/v1/organization", headers=rw(sim)).json()
    gen45 = org["tier"]["models"]["gen4.5"]
    assert gen45 == {"maxConcurrentGenerations": None, "maxDailyGenerations": 10}  # the account's limit applies
    assert isinstance(org["creditBalance"], int) and isinstance(org["tier"]["maxMonthlyCreditSpend"], int)
    assert org["usage"]["models"] == {"gen4_turbo": {"dailyGenerations": 1}}


@pytest.mark.parametrize(("headers", "header"), [
    ({"x-fal-disable-fallbacks": "true"}, "x-fal-disable-fallbacks"),
    ({"X-App-Fal-Disable-Fallback": "1"}, "x-app-fal-disable-fallback"),
    ({"x-fal-disable-fallbacks": "false", "x-app-fal-disable-fallback": "yes"}, "x-app-fal-disable-fallback"),
    ({"x-fal-disable-fallbacks": "0"}, None),
    ({}, None),
])
def test_fal_fallback_disable_header_under_either_name(sim, client, headers, header):
    queued = submit(client, sim, ok_kling(), **headers)
    entry = ledger_entry(sim, queued["request_id"])
    assert entry["fallback_disabled"] is (header is not None) and entry["fallback_header"] == header
