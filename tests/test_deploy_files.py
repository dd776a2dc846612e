"""What can be checked of the deployment files without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_parses_and_names_every_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker", "beat", "redis", "postgres", "migrate"} <= set(services)
    for name in ("web", "worker", "beat"):
        service = services[name]
        # The shared x-app anchor: one image, settings from the environment, migrate first.
        assert service["image"] == "kseg:latest"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["environment"]["DATABASE_URL"].startswith("${DATABASE_URL")
        assert service["command"][:2] == ["kseg", name]
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], name
    # The scale-out pattern: dedicated workers per class of work, off unless asked for.
    for name, queue in (("worker-interactive", "interactive"), ("worker-batch", "batch")):
        service = services[name]
        assert service["command"] == ["kseg", "worker", "--queues", queue]
        assert service["profiles"] == ["dedicated"] and service["image"] == "kseg:latest"
    assert services["migrate"]["command"] == ["kseg", "migrate"]


def test_dockerfile_installs_the_package_and_every_env_var_in_example_is_a_setting() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install ." in dockerfile
    settings_source = (ROOT / "shared" / "settings.py").read_text()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"#?\s*([A-Z_]+)=", line)
        if match and match.group(1).startswith(("KSEG_", "DATABASE_", "CELERY_")):
            assert f'"{match.group(1)}"' in settings_source, match.group(1)
