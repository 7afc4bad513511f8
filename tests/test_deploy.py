"""The Kubernetes example in deploy/kubernetes: valid against Kubernetes' own schemas (the
`kubernetes-validate` package ships them), and wired the way the README says."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from server.core.metrics import REALTIME_SESSIONS
from server.core.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
MANIFESTS = ["vllm.yaml", "edge.yaml"]


def resources() -> list[dict]:
    return [doc for name in MANIFESTS for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def find(kind: str, name: str) -> dict:
    return next(doc for doc in resources() if doc["kind"] == kind and doc["metadata"]["name"] == name)


@pytest.mark.parametrize("resource", resources(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_valid_against_the_kubernetes_schemas(resource: dict) -> None:
    kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_services_select_their_deployments() -> None:
    for name in ("vllm", "voxtral-edge"):
        deployment, service = find("Deployment", name), find("Service", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_edge_is_ready_on_ready_and_talks_to_the_vllm_service() -> None:
    [edge] = find("Deployment", "voxtral-edge")["spec"]["template"]["spec"]["containers"]
    assert edge["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert edge["livenessProbe"]["httpGet"]["path"] == "/health"
    env = {item["name"]: item["value"] for item in edge["env"]}
    fields = Settings.model_fields
    assert all(name.lower() in fields or name == "MODE" for name in env)
    vllm_port = find("Service", "vllm")["spec"]["ports"][0]["port"]
    assert env["VLLM_URL"] == f"http://vllm:{vllm_port}"
    [vllm] = find("Deployment", "vllm")["spec"]["template"]["spec"]["containers"]
    assert "--scheduling-policy=priority" in vllm["args"]


def test_the_autoscaler_reads_a_metric_the_edge_exports() -> None:
    hpa = find("HorizontalPodAutoscaler", "voxtral-edge")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "voxtral-edge"
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == REALTIME_SESSIONS._name
    adapter = yaml.safe_load((DEPLOY / "prometheus-adapter-values.yaml").read_text())
    assert adapter["rules"]["custom"][0]["name"]["as"] == REALTIME_SESSIONS._name
