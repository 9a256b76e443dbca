"""infra/ stays consistent with the code it deploys; offline and quick.

The heavy validators (hadolint, kubernetes-validate, checkov, terraform fmt) run from
infra/validate. These tests check what no validator can know: that the deployment file points
at real flows, that the images install what narro declares, that every NARRO_* variable is a
setting narro accepts, that GPU routing is wired, and that the worker policy stays least privilege.
"""

from __future__ import annotations

import inspect
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
DOCKERFILES = sorted(path for path in (INFRA / "docker").glob("Dockerfile.*") if path.suffix != ".dockerignore")
K8S_BASE = INFRA / "k8s" / "base"
TERRAFORM = INFRA / "terraform" / "s3-bucket"


def test_prefect_deployments_point_at_real_flows_with_valid_parameters():
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    assert {d["name"] for d in config["deployments"]} == {"render-course", "retry", "nightly-rerender"}
    for deployment in config["deployments"]:
        # A module path: Dask workers must be able to import the flow's module (narro.submit.ENTRYPOINT).
        assert ":" not in deployment["entrypoint"], deployment["name"]
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        signature = inspect.signature(flow.fn).parameters
        schedules = deployment.get("schedules", [])
        for parameters in [deployment["parameters"], *(s.get("parameters", {}) for s in schedules)]:
            assert set(parameters) <= set(signature), deployment["name"]
        manifest = deployment["parameters"].get("manifest")
        assert manifest is None or (ROOT / manifest).is_file(), deployment["name"]
        for schedule in schedules:
            # Every run a schedule starts has what the flow requires, and the course comes from the schedule.
            given = {**deployment["parameters"], **schedule.get("parameters", {})}
            required = {name for name, p in signature.items() if p.default is inspect.Parameter.empty}
            assert required <= set(given) and "{{" in schedule["parameters"]["manifest"], deployment["name"]


# ---------------------------------------------------------------------------- images

def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_two_worker_images_exist():
    assert [path.name for path in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_image_is_pinned_non_root_and_health_checked(dockerfile: Path):
    steps = _instructions(dockerfile)
    bases = [args.split()[0] for op, args in steps if op == "FROM"]
    for base in bases:
        _, _, tag = base.partition(":")
        assert re.search(r"\d", tag) and "latest" not in tag, f"{dockerfile.name}: {base} needs a version tag"
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile.name}: must end as a non-root user"
    assert any(op == "HEALTHCHECK" for op, _ in steps), f"{dockerfile.name}: no HEALTHCHECK"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_image_copies_only_what_exists_and_what_its_dockerignore_sends(dockerfile: Path):
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    sent = {line[1:] for line in ignore if line.startswith("!")}
    for op, args in _instructions(dockerfile):
        if op != "COPY" or "--from" in args:
            continue
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such path in the repository"
            assert source in sent, f"{dockerfile.name}: COPY {source}: excluded by {dockerfile.name}.dockerignore"


def _pip_installs(dockerfile: Path) -> list[str]:
    words: list[str] = []
    for op, args in _instructions(dockerfile):
        if op == "RUN" and "pip install" in args:
            command = args.split("pip install", 1)[1].split("&&")[0]
            words += [word.strip("\"'") for word in command.split() if not word.startswith("-")]
    return words


def test_images_install_declared_extras_and_the_same_pins_as_the_project():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project.get("optional-dependencies", {}))
    pinned = {}
    for requirement in project["dependencies"] + [r for extra in project.get("optional-dependencies", {}).values()
                                                  for r in extra]:
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*==\s*([^\s;,]+)", requirement)
        if match:
            pinned[match.group(1).lower()] = match.group(2)
    images = {path.name: _pip_installs(path) for path in DOCKERFILES}
    assert "./[quality]" in images["Dockerfile.cuda"], "the CUDA image must install the quality tier"
    for name, words in images.items():
        for word in words:
            extras = re.fullmatch(r"\.?/?\[(.+)\]", word)
            for extra in extras.group(1).split(",") if extras else ():
                assert extra in declared, f"{name}: installs narro[{extra}], which pyproject.toml does not declare"
            package, _, version = word.partition("==")
            package = re.sub(r"\[.*\]", "", package)
            if version and package.lower() in pinned:
                expected = pinned[package.lower()]
                assert version == expected, f"{name}: {word}, pyproject.toml pins {expected}"
    assert {w for w in images["Dockerfile.cpu"] if "==" in w} == {w for w in images["Dockerfile.cuda"] if "==" in w}


# ---------------------------------------------------------------------------- Kubernetes

def _base_objects() -> list[dict]:
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    objects = []
    for resource in kustomization["resources"]:
        objects += [doc for doc in yaml.safe_load_all((K8S_BASE / resource).read_text()) if doc]
    return objects


def _deployments() -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in _base_objects() if obj["kind"] == "Deployment"}


def test_kustomizations_name_only_files_that_exist():
    for kustomization in (INFRA / "k8s").rglob("kustomization.yaml"):
        config = yaml.safe_load(kustomization.read_text())
        named = config.get("resources", []) + [p["path"] for p in config.get("patches", []) if "path" in p]
        named += [env for generator in config.get("configMapGenerator", []) for env in generator.get("envs", [])]
        for entry in named:
            assert (kustomization.parent / entry).exists(), f"{kustomization.relative_to(ROOT)}: {entry} does not exist"


def _readme_secret_file(name: str) -> str:
    """The body of `cat > NAME <<'EOF'` in infra/README.md: what the operator puts in a Secret."""
    match = re.search(rf"cat > {re.escape(name)} <<'EOF'\n(.*?)\nEOF", (INFRA / "README.md").read_text(), re.S)
    assert match, f"infra/README.md must show the {name} of its Secret"
    return match.group(1)


def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _image_env(image: str) -> dict[str, str]:
    text = re.sub(r"\\\n\s*", " ", (INFRA / "docker" / f"Dockerfile.{image}").read_text())
    return dict(re.findall(r"\b(NARRO_[A-Z0-9_]+)=(\S+)", text))


def test_every_pod_environment_is_one_narro_accepts(tmp_path: Path):
    """Each worker's environment (image, ConfigMap, container env, the README's narro.toml) loads.

    narro refuses an unknown NARRO_<GROUP>_* variable or a bad value at start, so a typo here
    would be a cluster whose every pod exits.
    """
    from narro.settings import Settings

    secret = tmp_path / "narro.toml"
    secret.write_text(_readme_secret_file("narro.toml"))
    config_map = _env_file(K8S_BASE / "narro.env")
    assert config_map["NARRO_CONFIG"] == "/etc/narro/narro.toml"
    for name, deployment in _deployments().items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            image = "cuda" if container["image"].endswith("-cuda") else "cpu"
            environ = _image_env(image)
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] == "narro-settings", name
                environ.update(config_map)
            environ.update({env["name"]: env["value"] for env in container.get("env", []) if "value" in env})
            environ = {key: value for key, value in environ.items() if key.startswith("NARRO_")}
            if "NARRO_CONFIG" in environ:
                environ["NARRO_CONFIG"] = str(secret)  # the Secret's mount point, here
            settings = Settings.load(environ=environ, cwd=tmp_path)
            if "NARRO_CONFIG" in environ:
                assert settings.catalogue.url.startswith("postgresql"), name
            if name == "dask-worker-gpu":
                assert settings.codec_lm.device == "cuda"
            elif container.get("envFrom"):
                assert settings.codec_lm.device == "cpu", name
    for overlay in (INFRA / "k8s" / "overlays").glob("*/kustomization.yaml"):
        for generator in yaml.safe_load(overlay.read_text()).get("configMapGenerator", []):
            literals = dict(literal.split("=", 1) for literal in generator.get("literals", []))
            Settings.load(environ={k: v for k, v in literals.items() if k.startswith("NARRO_")}, cwd=tmp_path)


def test_prefect_profile_example_names_a_postgresql_database():
    parsed = tomllib.loads(_readme_secret_file("profiles.toml"))
    url = parsed["profiles"][parsed["active"]]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://")


def test_gpu_workers_ask_for_a_gpu_and_advertise_it_to_dask():
    spec = _deployments()["dask-worker-gpu"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    args = container["args"]
    assert args[args.index("--resources") + 1] == "GPU=1"
    assert {"name": "NARRO_CODEC_LM_DEVICE", "value": "cuda"} in container["env"]
    cpu_args = _deployments()["dask-worker-cpu"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--resources" not in cpu_args, "CPU workers must not advertise a GPU"


def test_every_pod_runs_locked_down_with_probes_and_limits():
    for name, deployment in _deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"]), name
            assert "livenessProbe" in container and "readinessProbe" in container, name
            assert not any("secretKeyRef" in env.get("valueFrom", {}) for env in container.get("env", [])), \
                f"{name}: secrets are mounted as files, not environment variables"


def test_network_policies_open_every_port_a_component_serves_to_its_clients():
    """A port served by a Deployment but closed by the policies is a cluster that never connects."""
    policies = [obj for obj in _base_objects() if obj["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               for p in policies), "no default-deny policy"
    opened: dict[str, set[int]] = {}
    for policy in policies:
        component = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        for rule in policy["spec"].get("ingress", []):
            opened.setdefault(component, set()).update(port["port"] for port in rule.get("ports", []))
    served = {"prefect-server": {4200}, "dask-scheduler": {8786}, "dask-worker": {8788, 8790}}
    for component, ports in served.items():
        closed = ports - opened.get(component, set())
        assert not closed, f"{component}: ports {closed} closed"


# ---------------------------------------------------------------------------- Terraform and IAM

def test_terraform_uses_only_declared_variables_and_defined_resources():
    """`terraform validate` needs providers from a registry; this catches the typos it would."""
    text = "\n".join(path.read_text() for path in sorted(TERRAFORM.glob("*.tf")))
    declared = set(re.findall(r'^variable "(\w+)"', text, re.M))
    used = set(re.findall(r"\bvar\.(\w+)", text))
    assert used == declared, f"undeclared: {used - declared}, unused: {declared - used}"
    locals_defined = set(re.findall(r"^\s+(\w+)\s+=", re.search(r"locals \{(.*?)\n\}", text, re.S).group(1), re.M))
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= locals_defined
    defined = set(re.findall(r'^(?:resource|data) "(\w+)" "(\w+)"', text, re.M))
    for kind, name in re.findall(r"\b(?:data\.)?(aws_\w+)\.(\w+)\b", text):
        assert (kind, name) in defined, f"{kind}.{name} is referenced but not defined"


def _hcl_statements(text: str) -> dict[str, set[str]]:
    """sid -> actions of each statement block in iam.tf's worker policy document."""
    statements = {}
    for block in re.findall(r"statement \{(.*?)\n  \}", text, re.S):
        sid = re.search(r'sid\s+=\s+"(\w+)"', block).group(1)
        statements[sid] = set(re.findall(r'"([a-z0-9]+:\w+)"', re.search(r"actions\s+=\s+\[(.*?)\]", block).group(1)))
    return statements


def test_worker_policy_is_least_privilege_and_matches_terraform():
    policy = json.loads((INFRA / "iam" / "worker-policy.json").read_text())
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    for statement in statements.values():
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            assert "*" not in action, f"{statement['Sid']}: wildcard action {action}"
        for resource in statement["Resource"]:
            assert resource != "*" and not resource.endswith(":::BUCKET/*"), f"{statement['Sid']}: {resource}"
    listing = statements["ListNarrationPrefix"]
    assert listing["Action"] == ["s3:ListBucket"] and listing["Resource"] == ["arn:aws:s3:::BUCKET"]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["PREFIX/*"]
    objects = statements["ReadWriteNarration"]
    assert set(objects["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert objects["Resource"] == ["arn:aws:s3:::BUCKET/PREFIX/*"]
    key = statements["UseBucketKeyThroughS3"]
    assert key["Condition"]["StringEquals"]["kms:ViaService"].startswith("s3.")
    assert set(statements) == {"ListNarrationPrefix", "ReadWriteNarration", "UseBucketKeyThroughS3"}

    terraform = _hcl_statements((TERRAFORM / "iam.tf").read_text())
    assert terraform == {sid: set(statement["Action"]) for sid, statement in statements.items()}


def test_bucket_module_keeps_its_protections():
    text = (TERRAFORM / "main.tf").read_text()
    for needle in ('status = "Enabled"', 'sse_algorithm     = "aws:kms"', "noncurrent_version_expiration",
                   "abort_incomplete_multipart_upload", '"aws:SecureTransport"', "enable_key_rotation     = true"):
        assert needle in text, f"main.tf lost {needle}"
    block = re.search(r'resource "aws_s3_bucket_public_access_block" "narration" \{(.*?)\n\}', text, re.S).group(1)
    assert len(re.findall(r"= true", block)) == 4
