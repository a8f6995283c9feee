"""docker-compose.yml and the Dockerfile, kept honest without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from pipeline.settings import CONFIG_FILE_VARIABLE, setting_names
from workers.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LIPDUB_IMAGE = "lipdub:latest"


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def lipdub_services() -> dict[str, dict]:
    return {name: s for name, s in SERVICES.items() if s.get("image") == LIPDUB_IMAGE}


def test_the_services_the_design_names_are_there():
    assert set(SERVICES) >= {"redis", "minio", "bucket", "worker", "beat", "flower", "sandbox"}
    assert set(lipdub_services()) == {
        "bucket",
        "worker",
        "beat",
        "flower",
        "sandbox",
        "webhooks",
        "cli",
    }
    assert SERVICES["sandbox"]["profiles"] == ["sandbox"]
    assert SERVICES["webhooks"]["profiles"] == ["webhooks"]


def test_every_lipdub_variable_set_is_a_real_setting():
    known = set(setting_names()) | {CONFIG_FILE_VARIABLE}
    seen = set()
    for name, service in SERVICES.items():
        for variable in environment(service):
            if variable.startswith("LIPDUB_"):
                assert variable in known, f"{name}: {variable} is not a lipdub setting"
                seen.add(variable)
    assert {"LIPDUB_REDIS__URL", "LIPDUB_STORAGE__ENDPOINT_URL"} <= seen


def test_services_reference_each_other_correctly():
    volumes = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            # a service that always runs never waits for one behind a profile
            if SERVICES[dependency].get("profiles"):
                assert service.get("profiles") == SERVICES[dependency]["profiles"], name
        for value in environment(service).values():
            if "://" in value and "${" not in value:
                host = urlsplit(value).hostname
                assert host in SERVICES, f"{name}: {value} names no service"
        for mount in service.get("volumes") or []:
            source = str(mount).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name}: volume {source} is not declared"
    # one service builds the image the others run
    assert [n for n, s in lipdub_services().items() if "build" in s] == ["worker"]


def test_redis_persists_with_aof_and_workers_scale():
    command = SERVICES["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    # Every answered write fsynced: lipdub's default durability (pipeline.durability) holds
    assert command[command.index("--appendfsync") + 1] == "always"
    # Item records in the compact encoding (their media facts exceed the default 64 bytes)
    assert int(command[command.index("--hash-max-listpack-value") + 1]) >= 1024
    assert any(str(v).endswith(":/data") for v in SERVICES["redis"]["volumes"])
    worker = SERVICES["worker"]
    # --scale needs no fixed name and no host port
    assert "container_name" not in worker and "ports" not in worker


def _command(argv: list[str]):
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    command = commands.get(argv[0])
    assert command is not None, f"lipdub has no command {argv[0]!r}"
    return command


@pytest.mark.parametrize("name", ["worker", "beat", "sandbox", "webhooks"])
def test_lipdub_commands_and_options_exist(name):
    argv = [str(a) for a in SERVICES[name]["command"]]
    command = _command(argv)
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for arg in argv[1:]:
        if arg.startswith("--"):
            assert arg.split("=")[0] in options, f"{name}: lipdub {argv[0]} has no {arg}"


def test_workers_mount_no_catalog_only_the_cli_service_does():
    # Local inputs are uploaded by the `lipdub run` that starts a batch (pipeline.uploads):
    # a worker fetches s3:// and https:// inputs only, so it needs no shared folder.
    for name, service in lipdub_services().items():
        mounts = [str(m) for m in service.get("volumes") or []]
        if name == "cli":
            assert mounts == ["./catalog:/catalog:ro"]
            assert service["profiles"] == ["cli"]
        else:
            assert not any("catalog" in m for m in mounts), name
    usage = (ROOT / "docker-compose.yml").read_text()
    assert "docker compose run --rm cli run /catalog/catalog.csv --yes" in usage
    assert "--yes" in _options("run")


def test_the_bucket_service_creates_the_bucket_lipdub_uses():
    # (it is a lipdub container: the same environment, so the same bucket)
    assert SERVICES["bucket"]["command"] == ["bucket", "--create"]
    assert SERVICES["bucket"]["restart"] == "no"
    assert "--create" in _options("bucket")
    worker = SERVICES["worker"]["depends_on"]
    assert worker["bucket"]["condition"] == "service_completed_successfully"


def test_beat_runs_the_shipped_schedules_whose_inbox_is_in_that_bucket():
    from pipeline.schedules.config import load_schedules

    assert "entrypoint" not in SERVICES["beat"], "the image's entrypoint: lipdub"
    assert SERVICES["beat"]["command"] == ["beat"]
    default_bucket = re.search(
        r":-([a-z0-9-]+)\}", environment(SERVICES["worker"])["LIPDUB_STORAGE__BUCKET"]
    )
    assert default_bucket is not None
    for spec in load_schedules(ROOT / "configs" / "schedule.yaml").values():
        assert spec.inbox.startswith(f"s3://{default_bucket.group(1)}/"), spec.name


def test_compose_variables_are_documented_in_the_env_example():
    text = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / "configs" / ".env.example").read_text()
    for variable in set(re.findall(r"\$\{([A-Z_]+)", text)):
        assert f"{variable}=" in example, f"{variable} is not in configs/.env.example"


def test_the_dockerfile_copies_what_exists_and_installs_real_extras():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    install = re.findall(r'pip install -c (\S+) "\.\[([a-z,]+)\]"', dockerfile)
    assert install, "the image installs with the constraints CI passed with"
    constraints, wanted = install[0]
    assert constraints == "configs/constraints.txt"
    assert dockerfile.index("COPY configs") < dockerfile.index("pip install")
    for extra in wanted.split(","):
        assert extra in extras
    assert 'ENTRYPOINT ["lipdub"]' in dockerfile


def compose_problems(path: Path) -> str:
    """What the compose specification's JSON schema (as check-jsonschema vendors it) finds
    wrong with a compose file; "" when nothing."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


def test_the_compose_file_follows_the_compose_specification(tmp_path):
    assert compose_problems(ROOT / "docker-compose.yml") == ""
    # And the check sees a mistake: a misspelt key is not in the specification
    text = (ROOT / "docker-compose.yml").read_text()
    assert "stop_grace_period:" in text
    misspelt = tmp_path / "docker-compose.yml"
    misspelt.write_text(text.replace("stop_grace_period:", "stop_grace_perod:"))
    assert "'stop_grace_perod' was unexpected" in compose_problems(misspelt)


def test_docker_compose_v2_accepts_the_file_where_it_is_installed():
    # Compose v2 (`docker compose`) is the tool the file is written for; the Python v1 of
    # Debian's docker-compose package predates `name` and `env_file: {path, required}`.
    docker = shutil.which("docker")
    probe = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if not probe or probe.returncode != 0:
        pytest.skip("docker compose v2 is not installed here (the schema check above runs)")
    env = {"MINIO_ROOT_PASSWORD": "test-password", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _options(command: str) -> set[str]:
    found = _command([command])
    return {opt for param in found.params for opt in getattr(param, "opts", [])}


def test_every_long_running_service_has_a_health_check():
    for name, service in SERVICES.items():
        if service.get("restart") == "no":
            continue  # a one-shot setup step
        assert "healthcheck" in service, name
    assert SERVICES["worker"]["healthcheck"]["test"] == ["CMD", "lipdub", "workers", "--here"]
    assert "--here" in _options("workers")


def test_images_are_pinned_and_off_the_removed_docker_hub_minio_repositories():
    for name, service in SERVICES.items():
        image = service.get("image", "")
        if image == LIPDUB_IMAGE:
            continue  # built here
        repository, _, tag = image.rpartition(":")
        assert tag and tag != "latest", name
        assert repository not in {"minio/minio", "minio/mc"}, f"{name}: gone from Docker Hub"


def test_a_stopping_worker_is_given_longer_than_its_longest_task():
    from pipeline.settings import Settings

    grace = SERVICES["worker"]["stop_grace_period"]
    minutes = re.fullmatch(r"(\d+)m", grace)
    assert minutes is not None, grace
    assert int(minutes.group(1)) * 60 > Settings().worker.task_time_limit_s


def test_the_ports_the_docs_name_are_published():
    schedule = (ROOT / "configs" / "schedule.yaml").read_text()
    published = {p.split(":")[-2] for s in SERVICES.values() for p in s.get("ports", [])}
    for port in re.findall(r"localhost:(\d+)", schedule):
        assert port in published, port


def test_the_http_health_probes_tell_a_live_server_from_a_dead_port(tmp_path):
    import sys

    from pipeline.local_servers import free_port
    from pipeline.sandbox.config import SandboxConfig
    from pipeline.sandbox.server import SandboxServer

    [code] = [
        s["healthcheck"]["test"][3]
        for s in SERVICES.values()
        if s.get("healthcheck", {}).get("test", [])[:3] == ["CMD", "python", "-c"]
    ][:1]
    with SandboxServer(SandboxConfig(workdir=tmp_path)) as live:
        for path, up in (("/_sandbox/stats", True), ("/no-such-route", True)):
            probe = code.replace(code.split("'")[1], live.url + path)
            ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30)
            assert (ran.returncode == 0) is up, ran.stderr
    dead = code.replace(code.split("'")[1], f"http://127.0.0.1:{free_port()}/")
    ran = subprocess.run([sys.executable, "-c", dead], capture_output=True, timeout=30)
    assert ran.returncode != 0
