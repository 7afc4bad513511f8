"""`HEALTH_PORT`: `/health`, `/ready` and `/metrics` on a port of their own, and nothing else there."""

import httpx

from tests.conftest import free_port


def test_health_port_answers_the_three_routes(make_edge) -> None:
    health_port = free_port()
    edge = make_edge(host="127.0.0.1", health_port=health_port)
    base = f"http://127.0.0.1:{health_port}"
    assert httpx.get(f"{edge.url}/health").status_code == 200  # the public port serves as before
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = httpx.get(f"{base}/metrics")
    assert metrics.status_code == 200 and "edge_requests_total" in metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    # The API stays on the public port only.
    assert httpx.get(f"{base}/v1/models").status_code == 404
    assert httpx.get(f"{base}/docs").status_code == 404
