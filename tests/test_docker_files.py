"""docker/: what can be checked without a Docker engine or a Kubernetes cluster. The compose file
and the KubeRay manifest parse, name the project's images, publish ports on loopback unless the
user opts in, run the right `ray start` commands, and their trainer commands are accepted by the
trainer's own CLI parser; the CPU image installs the project the way the Makefile does; no file
holds a token or password."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from trainer.cli import build_parser

DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
MANIFEST = DOCKER / "kuberay-rayjob.yaml"
IMAGE = re.compile(r"^(?:[\w.-]+(?::\d+)?/)*ray-ppo-trainer:(cpu|cuda)$")
VARIABLE = re.compile(r"\$\{(\w+)(?::-((?:[^{}]|\$\{[^}]*\})*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${VAR:-default}` interpolation (nested defaults too), with `env` as the environment."""
    env = env or {}
    while VARIABLE.search(value):
        value = VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    return value


def trainer_args(command: list[str]) -> list[str]:
    """The arguments after `python -m trainer` in a command (after `--` for `ray job submit`)."""
    if "--" in command:
        command = command[command.index("--") + 1 :]
    assert command[:3] == ["python", "-m", "trainer"], command
    return command[3:]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def manifest() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


@pytest.fixture(scope="module")
def rayjob(manifest) -> dict:
    [job] = [doc for doc in manifest if doc["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    return job


def test_compose_services_use_the_project_images(compose):
    services = compose["services"]
    assert {"head", "worker", "tensorboard"} <= set(services)
    for name, service in services.items():
        image = interpolate(service["image"])
        assert IMAGE.match(image), (name, image)
        if "build" in service:
            dockerfile = service["build"]["dockerfile"]
            assert (COMPOSE.parent / service["build"]["context"] / dockerfile).is_file()
            assert image.endswith(":cuda") == dockerfile.endswith(".cuda"), name
    assert interpolate(services["head"]["image"]) == "ray-ppo-trainer:cpu"
    assert services["worker-gpu"]["profiles"] == ["gpu"]  # the CUDA worker starts only when asked for


def test_compose_publishes_ports_on_loopback_unless_the_user_opts_in(compose):
    published = {
        name: [interpolate(port) for port in service.get("ports", [])] for name, service in compose["services"].items()
    }
    assert published["head"] == ["127.0.0.1:8265:8265"]
    assert published["tensorboard"] == ["127.0.0.1:6006:6006"]
    assert [port for ports in published.values() for port in ports if not port.startswith("127.0.0.1:")] == []
    opted_in = interpolate(compose["services"]["head"]["ports"][0], {"RAY_DASHBOARD_BIND": "0.0.0.0"})
    assert opted_in == "0.0.0.0:8265:8265"


def test_compose_head_and_workers_start_ray_with_token_auth(compose):
    services = compose["services"]
    head = services["head"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and head[-1] == "--block"
    assert {"--port=6379", "--dashboard-host=0.0.0.0", "--dashboard-port=8265"} <= set(head)
    for name in ("worker", "worker-gpu"):
        command = services[name]["command"]
        assert command[:3] == ["ray", "start", "--address=head:6379"] and command[-1] == "--block"
    assert int(interpolate(str(services["worker"]["deploy"]["replicas"]))) >= 1
    for name in ("head", "worker", "worker-gpu", "submit"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token"
        assert services[name]["secrets"] == ["ray_auth_token"]
    assert int(services["head"]["environment"]["RAY_JOB_STOP_WAIT_TIME_S"]) >= 30
    secret = interpolate(compose["secrets"]["ray_auth_token"]["file"], {"HOME": "/home/me"})
    assert secret == "/home/me/.ray/auth_token"  # where `ray get-auth-token --generate` writes it


def test_compose_tensorboard_serves_the_volume_the_head_writes_runs_to(compose):
    services = compose["services"]
    assert "runs:/runs" in services["head"]["volumes"]
    assert "runs:/runs:ro" in services["tensorboard"]["volumes"]
    assert "runs" in compose["volumes"]
    args = build_parser().parse_args(trainer_args(services["tensorboard"]["command"]))
    assert (args.command, args.logdir, args.host, args.port) == ("tensorboard", "/runs", "0.0.0.0", 6006)


def test_compose_submit_service_runs_the_trainer_cli_with_runs_on_the_volume(compose):
    command = compose["services"]["submit"]["command"]
    assert command[:3] == ["ray", "job", "submit"] and "--address=http://head:8265" in command
    args = build_parser().parse_args(trainer_args(command))
    assert (args.command, args.config, args.overrides) == ("train", "configs/cartpole.yaml", ["logging.dir=/runs"])
    assert (REPO_ROOT / args.config).is_file()


def test_rayjob_entrypoint_is_the_trainer_cli(rayjob):
    entrypoint = rayjob["spec"]["entrypoint"]
    assert entrypoint == "python -m trainer train configs/cartpole.yaml --run-dir /runs/cartpole --resume auto"
    args = build_parser().parse_args(trainer_args(shlex.split(entrypoint)))
    assert (args.command, args.config, args.run_dir, args.resume) == (
        "train",
        "configs/cartpole.yaml",
        "/runs/cartpole",
        "auto",
    )
    assert rayjob["spec"]["backoffLimit"] >= 1  # a failed job is retried, and the retry resumes
    assert "runtimeEnvYAML" not in rayjob["spec"]  # the image has everything: nothing installed per job


def pod_containers(rayjob: dict) -> dict[str, dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    pods |= {group["groupName"]: group["template"]["spec"] for group in cluster["workerGroupSpecs"]}
    pods["submitter"] = rayjob["spec"]["submitterPodTemplate"]["spec"]
    return {name: pod["containers"][0] for name, pod in pods.items()}


def test_rayjob_pods_use_the_project_images_and_the_token_secret(rayjob):
    containers = pod_containers(rayjob)
    assert {"head", "cpu", "gpu", "submitter"} <= set(containers)
    for name, container in containers.items():
        assert IMAGE.match(container["image"]), (name, container["image"])
        env = {item["name"]: item for item in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", name
        assert set(env["RAY_AUTH_TOKEN"]) == {"name", "valueFrom"}, name  # from a Secret, never a value
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ppo-ray-auth"
    assert containers["gpu"]["image"].endswith(":cuda")
    assert containers["gpu"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert containers["head"]["image"].endswith(":cpu") and containers["head"]["workingDir"] == "/app"
    assert {"mountPath": "/runs", "name": "runs"} in containers["head"]["volumeMounts"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"


def test_kubernetes_tensorboard_serves_the_runs_claim(manifest, rayjob):
    [claim] = [doc for doc in manifest if doc["kind"] == "PersistentVolumeClaim"]
    head_pod = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head_pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    [board] = [doc for doc in manifest if doc["kind"] == "Deployment"]
    pod = board["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert IMAGE.match(container["image"])
    args = build_parser().parse_args(trainer_args(container["command"]))
    assert (args.command, args.logdir, args.host) == ("tensorboard", "/runs", "0.0.0.0")
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def install_line(dockerfile: Path) -> str:
    """The RUN instruction (continuation lines joined) that installs the project (`pip install ... .`)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [
        line for line in text.splitlines() if line.startswith("RUN ") and re.search(r"pip install\b.*\s\.(\s|$)", line)
    ]
    assert len(lines) == 1, lines
    return lines[0]


def test_cpu_image_installs_the_project_as_the_makefile_does():
    makefile = (REPO_ROOT / "Makefile").read_text()
    [make_install] = [line.strip() for line in makefile.splitlines() if "pip install" in line]
    assert "--constraint constraints.txt" in make_install
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    assert "python -m pip install --constraint constraints.txt . " in install_line(DOCKER / "Dockerfile") + " "
    for copied in ("pyproject.toml", "constraints.txt", "trainer", "workers", "configs"):
        assert re.search(rf"^COPY .*\b{re.escape(copied)}\b", dockerfile, re.M), copied


def test_cuda_image_keeps_a_cuda_torch_and_the_cpu_image_python():
    dockerfile = (DOCKER / "Dockerfile.cuda").read_text()
    cpu_base = re.search(r"^ARG BASE_IMAGE=(\S+)$", (DOCKER / "Dockerfile").read_text(), re.M).group(1)
    assert re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1) == cpu_base  # same Python on every node
    assert "--constraint constraints.txt" not in install_line(DOCKER / "Dockerfile.cuda")
    assert "torch.version.cuda" in dockerfile  # the build fails on a CPU-only torch


SECRET_LITERAL = re.compile(
    r"(?i)(password|passwd|secret|token)[\w-]*[ \t]*[:=][ \t]*['\"]?(?!\$|/|\{|token\b)[A-Za-z0-9+/=_-]{12,}"
)


@pytest.mark.parametrize(
    "path",
    [
        *sorted(p.relative_to(REPO_ROOT) for p in DOCKER.iterdir() if p.is_file()),
        *(Path(name) for name in (".dockerignore", ".rayignore", "docs/cluster.md")),
    ],
    ids=str,
)
def test_no_file_holds_a_token_or_password(path):
    text = (REPO_ROOT / path).read_text()
    assert not SECRET_LITERAL.search(text), SECRET_LITERAL.search(text)
    assert not re.search(r"\b[0-9a-f]{32,}\b", text), "a long hex string looks like a token"
    assert "--from-literal" not in text
    assert not re.search(r"^\s*(ARG|ENV)\s+\w*(TOKEN|PASSWORD|SECRET)", text, re.M)
