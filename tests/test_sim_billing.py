"""Billing like the providers: what a success, each failure class, a cancel in each phase and a
delete cost, as the ledger, Runway's task `cost`, fal's `X-Fal-Billable-Units` and the credit
balance report it (the rules and their sources: docs/providers.md)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from test_sim_helpers import (GEN45, KLING, PIKA, client, create, fk, ledger_entry, make_sim, ok_kling, rw, settled, submit,
                              until, wait_fal, wait_runway)

from runner.sim import SimConfig, Simulator, read_ledger

__all__ = ["client", "make_sim"]  # fixtures, imported to be used here
SLOW = {"latency": {"default": 5.0}}  # long enough that nothing ends unless cancelled


def task_of(client, sim, task_id: str) -> dict:
    return client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).json()


def delete(client, sim, task_id: str) -> int:
    return client.delete(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).status_code


def fal_status(client, sim, queued: dict) -> dict:
    return client.get(queued["status_url"], headers=fk(sim)).json()


# -- Runway -----------------------------------------------------------------------------------------


def test_runway_cancel_refunds_a_waiting_or_pending_task_and_bills_a_running_one(make_sim, client):
    sim = make_sim(concurrency={"runway": 1}, **SLOW)
    running, throttled = (create(client, sim).json()["id"] for _ in range(2))
    assert task_of(client, sim, throttled)["status"] == "THROTTLED"
    assert delete(client, sim, throttled) == 204
    until(lambda: task_of(client, sim, running)["status"] == "RUNNING", what="RUNNING")
    assert delete(client, sim, running) == 204
    for task_id, phase, cost in ((throttled, "waiting", 0), (running, "running", 25)):
        task = task_of(client, sim, task_id)
        assert task["status"] == "CANCELLED" and task["cost"] == {"credits": cost}
        entry = ledger_entry(sim, task_id)
        assert entry["status"] == "cancelled" and entry["cancelled_at_phase"] == phase
        assert Decimal(entry["billed_usd"]) == Decimal(cost) / 100
    org = client.get(f"{sim.runway_url}/v1/organization", headers=rw(sim)).json()
    assert org["creditBalance"] == sim.config.credit_balance - 25


def test_runway_cancel_of_a_pending_task_is_refunded(make_sim, client):
    sim = make_sim(pending_s=5.0)
    task_id = create(client, sim).json()["id"]
    assert task_of(client, sim, task_id)["status"] == "PENDING"
    assert delete(client, sim, task_id) == 204
    assert task_of(client, sim, task_id)["cost"] == {"credits": 0}
    entry = ledger_entry(sim, task_id)
    assert entry["cancelled_at_phase"] == "pending" and entry["billed_usd"] == "0"


def test_runway_delete_of_a_finished_task_removes_it_and_keeps_the_charge(sim, client):
    task_id = create(client, sim).json()["id"]
    wait_runway(client, sim, task_id)
    assert delete(client, sim, task_id) == 204
    assert client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).status_code == 404
    assert delete(client, sim, task_id) == 404
    entry = ledger_entry(sim, task_id)
    assert entry["status"] == "succeeded" and entry["deleted"] is True and entry["billed_usd"] == "0.25"
    assert entry["cancelled_at_phase"] is None


def test_runway_cancelled_task_stays_readable_unless_forgotten(make_sim, client):
    kept, forgot = make_sim(**SLOW), make_sim(runway_forget_cancelled=True, **SLOW)
    for sim, status in ((kept, 200), (forgot, 404)):
        task_id = create(client, sim).json()["id"]
        assert delete(client, sim, task_id) == 204
        assert client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).status_code == status
        assert ledger_entry(sim, task_id)["status"] == "cancelled"  # the ledger knows either way


@pytest.mark.parametrize(("code", "credits"), [
    ("SAFETY.INPUT.TEXT", 25), ("SAFETY.INPUT.IMAGE", 25),  # input moderation: not refundable
    ("SAFETY.OUTPUT.VIDEO", 0), ("INTERNAL.BAD_OUTPUT.CODE01", 0), ("THIRD_PARTY.UNAVAILABLE", 0),
    ("INPUT_PREPROCESSING.SAFETY.TEXT", 0), ("ASSET.INVALID", 0), ("INTERNAL", 0),
])
def test_runway_failed_task_cost_shows_what_was_billed(sim, client, code, credits):
    sim.inject("task_failed", on="runway.create", failure_code=code)
    task, _ = wait_runway(client, sim, create(client, sim).json()["id"])
    assert task["status"] == "FAILED" and task["failureCode"] == code and task["failure"]
    assert task["cost"] == {"credits": credits} and "output" not in task
    assert Decimal(ledger_entry(sim, task["id"])["billed_usd"]) == Decimal(credits) / 100


def test_runway_unrefunded_failure_families_are_configurable(make_sim, client):
    sim = make_sim(runway_unrefunded_failures=["SAFETY"])  # a stricter provider: output moderation too
    sim.inject("task_failed", on="runway.create", failure_code="SAFETY.OUTPUT.VIDEO")
    task, _ = wait_runway(client, sim, create(client, sim).json()["id"])
    assert task["cost"] == {"credits": 25}


def test_bill_factor_shows_in_runway_cost_and_credits(make_sim, client):
    sim = make_sim(bill_factor=2.0)
    created = create(client, sim).json()
    assert created["estimatedCost"] == {"credits": 50}
    task, _ = wait_runway(client, sim, created["id"])
    assert task["cost"] == {"credits": 50} and Decimal(ledger_entry(sim, task["id"])["billed_usd"]) == Decimal("0.5")
    assert client.get(f"{sim.runway_url}/v1/organization", headers=rw(sim)).json()["creditBalance"] == sim.config.credit_balance - 50


# -- fal --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "model", "factor", "units", "billed"), [
    ({"prompt": "waves", "duration": 5}, PIKA, 1.0, "1", "0.20"),
    ({"prompt": "waves", "duration": 5, "resolution": "1080p"}, PIKA, 1.0, "2.25000000", "0.45"),  # priced per 720p clip
    ({"prompt": "a fast car", "duration": "4s"}, "fal-ai/veo3/fast", 1.0, "4", "1.60"),
    ({"prompt": "a fast car", "duration": "4s"}, "fal-ai/veo3/fast", 2.0, "8", "3.20"),  # billing above the price list
])
def test_fal_billable_units_times_the_listed_unit_price_is_the_bill(make_sim, client, body, model, factor, units, billed):
    sim = make_sim(bill_factor=factor)
    queued = submit(client, sim, body, model)
    wait_fal(client, sim, queued)
    result = client.get(queued["response_url"], headers=fk(sim))
    assert result.status_code == 200 and result.headers["x-fal-billable-units"] == units
    price = client.get(f"{sim.base_url}/fal-api/v1/models/pricing", headers=fk(sim), params={"endpoint_id": model}).json()
    (listed,) = price["prices"]
    assert Decimal(units) * Decimal(str(listed["unit_price"])) == Decimal(billed)
    entry = ledger_entry(sim, queued["request_id"])
    assert Decimal(entry["billed_usd"]) == Decimal(billed) and entry["billable_units"] == units


@pytest.mark.parametrize(("code", "status", "charged", "retryable"), [
    ("SAFETY.INPUT.TEXT", 422, True, "false"),  # a model error: may be charged (fal FAQ)
    ("SAFETY.OUTPUT.VIDEO", 422, True, "false"),
    ("THIRD_PARTY.UNAVAILABLE", 503, False, "true"),  # 5xx: never charged
    ("INTERNAL.BAD_OUTPUT.CODE01", 500, False, None),
])
def test_fal_failures_are_reported_in_the_result_and_billed_by_class(sim, client, code, status, charged, retryable):
    sim.inject("task_failed", on="fal.submit", failure_code=code)
    queued = submit(client, sim, {"prompt": "waves", "duration": 5}, PIKA)
    final, _ = wait_fal(client, sim, queued)
    assert final.json()["error"] and final.json()["error_type"]
    result = client.get(queued["response_url"], headers=fk(sim))
    assert result.status_code == status and result.headers.get("x-fal-retryable") == retryable
    detail = result.json()["detail"]
    if status == 422:
        assert detail[0]["type"] == "content_policy_violation" and detail[0]["loc"][0] == "body" and detail[0]["msg"]
    assert result.headers["x-fal-billable-units"] == ("1" if charged else "0")
    assert Decimal(ledger_entry(sim, queued["request_id"])["billed_usd"]) == (Decimal("0.20") if charged else 0)


def test_fal_invalid_input_is_never_charged_and_model_errors_can_be_free(make_sim, client):
    sim = make_sim(fal_charges_model_errors=False)
    invalid = submit(client, sim, {"image_url": "https://example.com/a.png"})  # no prompt
    sim.inject("task_failed", on="fal.submit", failure_code="SAFETY.OUTPUT.VIDEO")
    moderated = submit(client, sim, {"prompt": "waves", "duration": 5}, PIKA)
    for queued in (invalid, moderated):
        wait_fal(client, sim, queued)
        result = client.get(queued["response_url"], headers=fk(sim))
        assert result.status_code == 422 and result.headers["x-fal-billable-units"] == "0"
        assert ledger_entry(sim, queued["request_id"])["billed_usd"] == "0"


def test_fal_cancel_of_a_queued_request_removes_it_unbilled(make_sim, client):
    sim = make_sim(concurrency={"fal": 1}, **SLOW)
    submit(client, sim, ok_kling("ahead"))
    queued = submit(client, sim, {"prompt": "rain", "duration": 5}, PIKA)
    cancel = client.put(queued["cancel_url"], headers=fk(sim))
    assert cancel.status_code == 202 and cancel.json() == {"status": "CANCELLATION_REQUESTED"}
    status = fal_status(client, sim, queued)
    assert status["status"] == "COMPLETED" and status["error_type"] == "client_cancelled"
    result = client.get(queued["response_url"], headers=fk(sim))
    assert result.status_code == 499 and result.headers["x-fal-billable-units"] == "0"
    entry = ledger_entry(sim, queued["request_id"])
    assert entry["status"] == "cancelled" and entry["cancelled_at_phase"] == "waiting" and entry["billed_usd"] == "0"
    unknown = client.put(queued["cancel_url"].replace(queued["request_id"], "nope"), headers=fk(sim))
    assert unknown.status_code == 404 and unknown.json() == {"status": "NOT_FOUND"}


def test_fal_cancel_of_a_running_request_by_default_completes_anyway_and_bills(make_sim, client):
    sim = make_sim(latency={"default": 0.4})
    queued = submit(client, sim, {"prompt": "rain", "duration": 5}, PIKA)
    until(lambda: fal_status(client, sim, queued)["status"] == "IN_PROGRESS", what="IN_PROGRESS")
    assert client.put(queued["cancel_url"], headers=fk(sim)).status_code == 202
    final, _ = wait_fal(client, sim, queued)
    assert "error" not in final.json()  # the model ignored the signal: the paid result is there
    assert client.get(queued["response_url"], headers=fk(sim)).status_code == 200
    entry = ledger_entry(sim, queued["request_id"])
    assert entry["status"] == "succeeded" and entry["cancelled_at_phase"] == "running"
    assert Decimal(entry["billed_usd"]) == Decimal("0.20")


def test_fal_cancel_of_a_running_request_that_stops_is_still_billed(make_sim, client):
    sim = make_sim(fal_running_cancel="stops", **SLOW)
    queued = submit(client, sim, {"prompt": "rain", "duration": 5}, PIKA)
    until(lambda: fal_status(client, sim, queued)["status"] == "IN_PROGRESS", what="IN_PROGRESS")
    assert client.put(queued["cancel_url"], headers=fk(sim)).status_code == 202
    assert fal_status(client, sim, queued)["error_type"] == "client_cancelled"
    result = client.get(queued["response_url"], headers=fk(sim))
    assert result.status_code == 499 and result.headers["x-fal-billable-units"] == "1"
    entry = ledger_entry(sim, queued["request_id"])
    assert entry["status"] == "cancelled" and entry["cancelled_at_phase"] == "running"
    assert Decimal(entry["billed_usd"]) == Decimal("0.20")


def test_fal_cancel_of_a_completed_request_leaves_its_result_collectable(sim, client):
    queued = submit(client, sim, {"prompt": "rain", "duration": 5}, PIKA)
    wait_fal(client, sim, queued)
    again = client.put(queued["cancel_url"], headers=fk(sim))
    assert again.status_code == 400 and again.json() == {"status": "ALREADY_COMPLETED"}
    assert client.get(queued["response_url"], headers=fk(sim)).status_code == 200
    entry = ledger_entry(sim, queued["request_id"])
    assert entry["status"] == "succeeded" and Decimal(entry["billed_usd"]) == Decimal("0.20")
    assert entry["cancelled_at_phase"] is None


def test_price_list_prices_what_the_manifests_leave_unpriced(make_sim, client):
    sim = make_sim(price_list={"fal-kling-v2.1-standard": 0.05})
    queued = submit(client, sim, ok_kling())
    wait_fal(client, sim, queued)
    assert client.get(queued["response_url"], headers=fk(sim)).headers["x-fal-billable-units"] == "5"
    assert ledger_entry(sim, queued["request_id"])["billed_usd"] == "0.25"  # 5 s at $0.05/s
    price = client.get(f"{sim.base_url}/fal-api/v1/models/pricing", headers=fk(sim), params={"endpoint_id": KLING}).json()
    assert price["prices"] == [{"endpoint_id": KLING, "unit_price": 0.05, "unit": "second", "currency": "USD"}]
    with pytest.raises(ValueError, match="has a price in its manifest"):
        Simulator(SimConfig(price_list={"gen4_turbo": 0.1}))
    with pytest.raises(ValueError, match="is not a model"):
        Simulator(SimConfig(price_list={"kling-9": 0.1}))


# -- the bill outlives the process ------------------------------------------------------------------


def test_state_file_keeps_bills_and_cancel_phases(make_sim, tmp_path, client):
    path = tmp_path / "state.jsonl"
    a = make_sim(state_path=str(path), concurrency={"gen4.5": 1}, latency={"gen4.5": 5.0})
    running, waiting = (create(client, a, GEN45, "text_to_video").json()["id"] for _ in range(2))
    until(lambda: task_of(client, a, running)["status"] == "RUNNING", what="RUNNING")
    assert delete(client, a, waiting) == 204 and delete(client, a, running) == 204  # waiting first: still waiting
    a.inject("task_failed", on="runway.create", failure_code="SAFETY.INPUT.TEXT")
    failed = create(client, a).json()["id"]
    settled(a)
    before = a.ledger()
    a.stop()
    assert read_ledger(path) == before
    b = make_sim(state_path=str(path))
    assert b.ledger() == before
    bills = {e["task_id"]: (e["billed_usd"], e["cancelled_at_phase"]) for e in before}
    assert bills == {running: ("0.36", "running"), waiting: ("0", "waiting"), failed: ("0.25", None)}
    assert task_of(client, b, running)["cost"] == {"credits": 36}
    org = client.get(f"{b.runway_url}/v1/organization", headers=rw(b)).json()
    assert org["creditBalance"] == b.config.credit_balance - 36 - 25
