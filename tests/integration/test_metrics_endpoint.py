"""Who may read /metrics, and what a scrape holds (the real app over TestClient)."""

from __future__ import annotations

import pytest

from erp.core.config import get_settings


@pytest.fixture
def settings_env(monkeypatch):
    def use(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield use
    monkeypatch.undo()
    get_settings.cache_clear()


def test_without_a_token_metrics_answer_only_in_development(api_client, settings_env):
    settings_env(ERP_ENVIRONMENT="production")
    refused = api_client.get("/metrics")
    assert refused.status_code == 403 and "METRICS_TOKEN" in refused.json()["error"]["message"]
    settings_env(ERP_ENVIRONMENT="development")
    assert api_client.get("/metrics").status_code == 200


def test_the_token_is_required_when_configured(api_client, settings_env):
    settings_env(METRICS_TOKEN="a-long-metrics-token-123", ERP_ENVIRONMENT="development")
    assert api_client.get("/metrics").status_code == 401
    assert api_client.get("/metrics", headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
    response = api_client.get("/metrics", headers={"Authorization": "Bearer a-long-metrics-token-123"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert 'celery_queue_length{queue_name="celery"}' in response.text
    assert "# TYPE celery_task_succeeded_total counter" in response.text


def test_routes_are_counted_by_template_not_raw_path(api_client, settings_env, make_user):
    settings_env(ERP_ENVIRONMENT="development")
    user = make_user()
    for _ in range(2):
        api_client.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000", headers=user.headers)
    api_client.get("/no/such/path/12345")
    text = api_client.get("/metrics").text
    assert 'route="/api/v1/tasks/{task_id}"' in text
    assert "00000000-0000" not in text and "/no/such/path" not in text
    assert 'route="<unmatched>"' in text
