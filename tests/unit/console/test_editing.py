"""The schedule form's text as the API's request body, its messages by field, and its preview."""

from __future__ import annotations

from datetime import UTC, datetime

from erp.console import editing


def values(**fields: str) -> dict[str, str]:
    return editing.form_values({"name": "lights", "task": "erp.ping", **fields})


def test_a_new_schedule_leaves_empty_fields_out_and_a_change_clears_them():
    form = values(kind="solar", event="sunset", latitude="52.5", longitude="13.4", priority="", jitter_seconds="30")
    created, errors = editing.create_body(form)
    assert errors == {}
    assert created["schedule"] == {"kind": "solar", "event": "sunset", "latitude": "52.5", "longitude": "13.4"}
    assert "priority" not in created and "queue" not in created and created["jitter_seconds"] == 30
    assert created["args"] == [] and created["kwargs"] == {} and created["one_off"] is False
    changed, _ = editing.body_of(form, clearing=True)
    assert changed["priority"] is None and changed["queue"] is None and changed["headers"] is None


def test_json_that_is_not_json_is_named_at_its_field():
    data, errors = editing.validated(values(kwargs='{"a": ', args="[1, 2]"))
    assert data is None and set(errors) == {"kwargs"} and errors["kwargs"].startswith("not JSON")


def test_the_schemas_messages_land_at_the_forms_fields():
    _, clocked = editing.validated(values(kind="clocked", clocked_time="2030-01-01T09:00"))
    assert "clocked_time needs a UTC offset" in clocked["clocked_time"]
    _, unknown = editing.validated(values(kind="weekly"))
    assert set(unknown) == {"kind"}
    _, policy = editing.validated(values(overlap_policy="queue", one_off="sometimes"))
    assert set(policy) == {"overlap_policy", "one_off"}


def test_a_refusal_of_the_service_lands_at_the_field_its_message_names():
    assert editing.service_error_field("routing: its messages would reach no queue") == "routing"
    assert editing.service_error_field("task 'erp.x' is not registered; schedulable tasks: ...") == "task"
    assert editing.service_error_field("schedule: crontab minute '61' is not valid") == "schedule"
    assert editing.service_error_field("something else") == "form"


def test_the_preview_follows_start_time_expiry_and_one_off():
    now = datetime(2030, 6, 1, tzinfo=UTC)
    solar = {"kind": "solar", "event": "sunrise", "latitude": "52.52", "longitude": "13.40"}
    bounded = editing.preview(
        values(**solar, start_time="2030-07-01T00:00:00Z", expires="2030-07-03T12:00:00Z"), now=now
    )
    assert bounded.errors == {} and [slot.slot.day for slot in bounded.slots] == [1, 2, 3]
    once = editing.preview(values(**solar, one_off="once"), now=now)
    assert len(once.slots) == 1 and "one-off: it runs once" in once.notes
    naive = editing.preview(values(**solar, expires="2030-07-03T12:00"), now=now)
    assert "expires needs a UTC offset" in naive.errors["expires"]
