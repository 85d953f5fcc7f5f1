"""The checks of .ci/check-deploy (which installs the tools and builds the binary first).

Validates the Dockerfile, .dockerignore, deploy/compose, deploy/kubernetes and
deploy/systemd without a Docker engine, a cluster or systemd as PID 1. Every problem is
printed; the exit status is 1 if there was any.

Environment: FAPI_GATEWAY_BIN (the built binary), TOOLS_BIN (the folder with hadolint,
docker-compose and kubernetes-validate), K8S_VERSION (the schema version).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import yaml
from docker.utils.build import exclude_paths

ROOT = Path.cwd()
BIN = Path(os.environ["FAPI_GATEWAY_BIN"]).resolve()
TOOLS = Path(os.environ["TOOLS_BIN"])
K8S_VERSION = os.environ["K8S_VERSION"]
PROBLEMS: list[str] = []
TMP = Path(tempfile.mkdtemp(prefix="fapi-check-deploy-"))

# What a private key looks like (a PEM header followed by key material, not just the
# header text that parsers mention).
PRIVATE_KEY = re.compile(rb"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----\s*[A-Za-z0-9+/=]{40,}")


def problem(what: str) -> None:
    PROBLEMS.append(what)
    print(f"  FAIL {what}")


def ok(what: str) -> None:
    print(f"  ok   {what}")


def run(args: list[str | Path], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)


def expect_success(label: str, args: list[str | Path], quiet_output: bool = False, **kw) -> bool:
    """Runs args; a non-zero exit (or, with quiet_output, any output) is a problem."""
    result = run(args, **kw)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or (quiet_output and output):
        problem(f"{label}: exit {result.returncode}\n{indent(output)}")
        return False
    ok(label)
    return True


def indent(text: str) -> str:
    return "\n".join("         " + line for line in text.splitlines()[-40:])


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    if not match:
        raise ValueError(f"cannot read duration {text!r}")
    return int(match.group(1)) * units[match.group(2)]


def stop_budget(config: dict) -> float:
    """shutdown_delay + shutdown_grace of a gateway configuration (defaults 0 s and 30 s)."""
    limits = config.get("limits") or {}
    return parse_duration(limits.get("shutdown_delay", "0s")) + parse_duration(limits.get("shutdown_grace", "30s"))


def cli_accepts(label: str, args: list[str]) -> None:
    """The command line parses: the same arguments plus --help exit 0 (clap validates every
    flag before it prints help), so a renamed or removed flag fails here."""
    expect_success(f"CLI accepts `fapi-gateway {' '.join(args)}`", [BIN, *args, "--help"])


def check_config_in(root: Path, config_file: Path, mount_prefixes: list[str], label: str) -> None:
    """check-config on a copy of config_file whose absolute mount paths point into root,
    where the files have been laid out as the container mounts would."""
    text = config_file.read_text()
    for prefix in mount_prefixes:
        text = text.replace(prefix, f"{root}{prefix}")
    copy = root / "checked-gateway.yaml"
    copy.write_text(text)
    result = run([BIN, "check-config", copy])
    if result.returncode != 0:
        problem(f"{label}: check-config failed\n{indent(result.stdout + result.stderr)}")
    else:
        ok(f"{label}: fapi-gateway check-config passes with the files laid out as mounted")


# ------------------------------------------------------------------------------------------
def check_dockerfile() -> None:
    print("== Dockerfile")
    expect_success("hadolint Dockerfile (every rule, info included)", [TOOLS / "hadolint", "Dockerfile"])
    text = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(.*)$", text, re.M))
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]
    if args.get("VERSION") != cargo["version"]:
        problem(f"Dockerfile ARG VERSION={args.get('VERSION')} but Cargo.toml has version {cargo['version']}")
    else:
        ok(f"ARG VERSION matches Cargo.toml ({cargo['version']})")
    rust = re.fullmatch(r".*/rust:(\d+)\.(\d+)\.(\d+)-slim-bookworm", args.get("RUST_IMAGE", ""))
    if not rust:
        problem(f"RUST_IMAGE {args.get('RUST_IMAGE')!r} is not an exact rust:X.Y.Z-slim-bookworm tag")
    else:
        have = tuple(int(x) for x in rust.groups())
        need = tuple(int(x) for x in (cargo["rust-version"].split(".") + ["0"])[:3])
        if have < need:
            problem(f"RUST_IMAGE is Rust {'.'.join(map(str, have))}, Cargo.toml needs {cargo['rust-version']}")
        else:
            ok(f"RUST_IMAGE pinned to Rust {'.'.join(map(str, have))} (rust-version {cargo['rust-version']})")
    if "debian12" not in args.get("RUNTIME_IMAGE", ""):
        problem("RUNTIME_IMAGE must be a Debian 12 image: the binary is linked in bookworm")
    for digest in ("RUST_DIGEST", "RUNTIME_DIGEST"):
        value = args.get(digest)
        if value is None or (value and not re.fullmatch(r"sha256:[0-9a-f]{64}", value)):
            problem(f"ARG {digest} must be empty or sha256:<64 hex>, is {value!r}")
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    for image in froms:
        if image not in ("deps",) and "_DIGEST:+@}" not in image:
            problem(f"FROM {image}: not through the *_IMAGE/*_DIGEST arguments")
    runtime = text.split("\nFROM ${RUNTIME_IMAGE}")[-1]
    for needle, why in [
        ("USER 65532:65532", "a numeric non-root USER"),
        ("FAPI_GATEWAY_ADMIN_ADDRESS=0.0.0.0:9901", "the admin address default"),
        ('CMD ["/usr/local/bin/fapi-gateway", "healthcheck"]', "HEALTHCHECK through the binary"),
        ('org.opencontainers.image.licenses="Apache-2.0"', "the license label"),
    ]:
        if needle not in runtime:
            problem(f"runtime stage lacks {why} ({needle})")
    copies = re.findall(r"^COPY (.*)$", runtime, re.M)
    if any("--from=build" not in c for c in copies):
        problem(f"the runtime stage copies from the build context: {copies}")
    else:
        ok("runtime stage: numeric non-root user, admin address, healthcheck, labels; copies only from the build stage")
    entry = re.search(r"^ENTRYPOINT \[(.*)\]$", runtime, re.M)
    cmd = re.search(r"^CMD \[(.*)\]$", runtime, re.M)
    if entry and cmd:
        cmd_args = yaml.safe_load(f"[{cmd.group(1)}]")
        cli_accepts("image CMD", cmd_args)
    cli_accepts("HEALTHCHECK", ["healthcheck"])


def check_context() -> None:
    print("== build context (.dockerignore)")
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    included = sorted(p for p in exclude_paths(str(ROOT), patterns) if (ROOT / p).is_file())
    context = TMP / "context"
    bad = []
    for rel in included:
        path = ROOT / rel
        if rel.split("/")[0] in ("certs", "target", "fuzz", ".git", "tests", "examples") or "/certs/" in rel:
            bad.append(f"{rel} (excluded folder)")
        elif PRIVATE_KEY.search(path.read_bytes()):
            bad.append(f"{rel} (holds a private key)")
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, context / rel)
    if bad:
        problem("the build context holds: " + ", ".join(bad))
    else:
        ok(f"the build context has {len(included)} files, no key, nothing from certs/ target/ fuzz/ .git/")
    # Files the sources embed must be in the context, or the image build fails.
    missing = []
    for rs in context.rglob("*.rs"):
        for target in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', rs.read_text(errors="replace")):
            if not (rs.parent / target).resolve().is_file():
                missing.append(f"{rs.relative_to(context)} includes {target}")
    if missing:
        problem("files embedded by the sources are not in the build context: " + "; ".join(missing))
    else:
        ok("every include_str!/include_bytes! target is in the context")
    # The manifest loads with only the context's files (every target file present) ...
    expect_success("cargo metadata in the build context", ["cargo", "metadata", "--no-deps", "--offline",
                                                             "--format-version", "1", "--manifest-path",
                                                             context / "Cargo.toml"])
    # ... and the dependency skeleton the Dockerfile builds loads and is locked.
    skeleton = TMP / "skeleton"
    if expect_success("deploy/docker/cargo-skeleton.sh on the context",
                      ["sh", context / "deploy/docker/cargo-skeleton.sh", context, skeleton]):
        expect_success("the skeleton's manifest loads and Cargo.lock is up to date (cargo metadata --locked)",
                       ["cargo", "metadata", "--locked", "--offline", "--format-version", "1",
                        "--manifest-path", skeleton / "Cargo.toml"])
        real = sorted(p.relative_to(context).as_posix() for p in context.rglob("*.rs"))
        stubs = {p.relative_to(skeleton).as_posix() for p in skeleton.rglob("*.rs")}
        targets = re.findall(r'"src_path":"([^"]+)"', run(["cargo", "metadata", "--no-deps", "--offline",
                                                          "--format-version", "1", "--manifest-path",
                                                          context / "Cargo.toml"]).stdout)
        wanted = {Path(t).relative_to(context).as_posix() for t in targets}
        if wanted != stubs:
            problem(f"skeleton stubs {sorted(stubs)} != targets {sorted(wanted)}")
        else:
            ok(f"the skeleton stubs exactly the {len(stubs)} targets ({len(real)} source files in the context)")


def check_pin_digests() -> None:
    print("== deploy/pin-digests.sh (against a stand-in docker)")
    repo = TMP / "pin"
    (repo / "deploy").mkdir(parents=True)
    shutil.copy2(ROOT / "Dockerfile", repo / "Dockerfile")
    shutil.copy2(ROOT / "deploy/pin-digests.sh", repo / "deploy/pin-digests.sh")
    fake = TMP / "fake-docker"
    fake.mkdir()
    digest = "sha256:" + "ab" * 32
    (fake / "docker").write_text(
        "#!/bin/sh\n"
        '[ "$1 $2" = "buildx version" ] && exit 0\n'
        f'[ "$1 $2 $3" = "buildx imagetools inspect" ] && [ "$5" = "--format" ] && echo {digest} && exit 0\n'
        "exit 1\n")
    (fake / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    if not expect_success("pin-digests.sh rewrites the digests", ["bash", repo / "deploy/pin-digests.sh"], env=env):
        return
    text = (repo / "Dockerfile").read_text()
    if f"ARG RUST_DIGEST={digest}" in text and f"ARG RUNTIME_DIGEST={digest}" in text:
        ok("both digest ARGs set")
    else:
        problem("pin-digests.sh did not set ARG RUST_DIGEST / RUNTIME_DIGEST")
    expect_success("pin-digests.sh --check after pinning", ["bash", repo / "deploy/pin-digests.sh", "--check"], env=env)
    expect_success("hadolint on the pinned Dockerfile", [TOOLS / "hadolint", repo / "Dockerfile"])


# ------------------------------------------------------------------------------------------
def generate_dev_certs(command: list[str], directory: Path) -> bool:
    """Runs the compose file's dev-as command (its --dir and --address replaced) until its
    files appear, then stops it."""
    args = []
    for arg in command:
        if arg.startswith("--dir="):
            arg = f"--dir={directory}"
        elif arg.startswith("--address="):
            arg = "--address=127.0.0.1:0"
        args.append(arg)
    process = subprocess.Popen([str(BIN), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if (directory / "dev-issuer-jwks.json").exists():
                time.sleep(0.3)
                return True
            time.sleep(0.1)
        output = process.stdout.read() if process.poll() is not None else ""
        problem(f"`fapi-gateway {' '.join(args)}` generated no certificates (exit {process.poll()})\n{indent(output)}")
        return False
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def check_compose() -> None:
    print("== deploy/compose")
    compose_dir = ROOT / "deploy/compose"
    compose = compose_dir / "docker-compose.yml"
    dc = TOOLS / "docker-compose"
    expect_success("docker compose config -q (compose-spec schema, interpolation, references)",
                   [dc, "-f", compose, "config", "-q"])
    expect_success("docker compose --profile replicas config -q", [dc, "-f", compose, "--profile", "replicas", "config", "-q"])
    rendered = yaml.safe_load(run([dc, "-f", compose, "--profile", "replicas", "config"]).stdout)
    services = rendered["services"]
    for name, service in services.items():
        image = service.get("image", "")
        if "build" not in service and not re.search(r":\d+\.\d+\.\d+", image):
            problem(f"service {name}: image {image!r} is not pinned to an exact version")
        for port in service.get("ports", []):
            if port.get("host_ip") != "127.0.0.1":
                problem(f"service {name}: port {port.get('published')} is published beyond 127.0.0.1")
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and not Path(volume["source"]).exists():
                problem(f"service {name}: bind mount source {volume['source']} does not exist")
        for dependency, how in (service.get("depends_on") or {}).items():
            if how.get("condition") == "service_healthy" and "healthcheck" not in services[dependency] \
                    and "build" not in services[dependency]:
                problem(f"service {name} waits for {dependency} to be healthy, which has no healthcheck")
    ok("images pinned, ports on 127.0.0.1 only, bind-mounted files exist, health conditions have health checks")

    config_file = compose_dir / "gateway.yaml"
    config = yaml.safe_load(config_file.read_text())
    for name in ("gateway", "gateway-2"):
        grace = parse_duration(services[name].get("stop_grace_period", "10s"))
        if grace <= stop_budget(config):
            problem(f"{name}: stop_grace_period {grace}s <= shutdown_delay + shutdown_grace {stop_budget(config)}s")
    ok(f"stop_grace_period exceeds shutdown_delay + shutdown_grace ({stop_budget(config)} s)")

    # dev-as writes where the gateways read.
    dev_as = services["dev-as"]
    command = dev_as["command"]
    dev_dir = next((a.split("=", 1)[1] for a in command if a.startswith("--dir=")), None)
    if dev_dir is None:
        problem("dev-as's command has no --dir=…")
        return
    volume_of = lambda service, target: next((v for v in service["volumes"] if v["target"] == target), None)  # noqa: E731
    as_volume = volume_of(dev_as, dev_dir)
    if not as_volume or as_volume["type"] != "volume":
        problem(f"dev-as --dir {dev_dir} is not a named volume mount")
    for name in ("gateway", "gateway-2"):
        volume = volume_of(services[name], dev_dir)
        if not volume or not as_volume or volume.get("source") != as_volume.get("source"):
            problem(f"{name} does not mount dev-as's volume at {dev_dir}")
    audience = next((a.split("=", 1)[1] for a in command if a.startswith("--audience=")), None)
    if audience is None:
        problem("dev-as has no --audience=…: its default must then match gateway.yaml's audiences")
    elif audience not in config["issuers"][0]["audiences"]:
        problem(f"dev-as --audience {audience} is not among gateway.yaml's audiences")
    cli_accepts("dev-as command", command)
    for name in ("gateway", "dev-as"):
        test = services[name].get("healthcheck", {}).get("test")
        if test and test[0] == "CMD" and test[1] == "/usr/local/bin/fapi-gateway":
            cli_accepts(f"{name} health check", test[2:])

    root = TMP / "compose-root"
    if generate_dev_certs(command, root / dev_dir.lstrip("/")):
        ok(f"`fapi-gateway dev-as` generated {sorted(p.name for p in (root / dev_dir.lstrip('/')).iterdir())}")
        check_config_in(root, config_file, [dev_dir + "/"], "deploy/compose/gateway.yaml")

    nginx_conf = compose_dir / "upstream/default.conf"
    main_conf = TMP / "nginx.conf"
    main_conf.write_text(f"pid {TMP}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
                         f"http {{\n  access_log off;\n  include {nginx_conf};\n}}\n")
    expect_success("nginx -t on upstream/default.conf", ["nginx", "-t", "-q", "-c", main_conf])


# ------------------------------------------------------------------------------------------
def check_kubernetes() -> None:
    print(f"== deploy/kubernetes (schemas of Kubernetes {K8S_VERSION}, strict)")
    k8s = ROOT / "deploy/kubernetes"
    manifests = sorted(p for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml")
    expect_success(f"kubernetes-validate --strict: {' '.join(p.name for p in manifests)}",
                   [TOOLS / "kubernetes-validate", "--strict", "--quiet", "-k", K8S_VERSION, *manifests])
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    for resource in kustomization.get("resources", []):
        if not (k8s / resource).is_file():
            problem(f"kustomization.yaml lists {resource}, which does not exist")
    if "secret.yaml" in kustomization.get("resources", []):
        problem("kustomization.yaml must not apply secret.yaml (placeholders)")
    rendered = run(["kubectl", "kustomize", k8s])
    if rendered.returncode != 0:
        problem(f"kubectl kustomize failed\n{indent(rendered.stderr)}")
    else:
        out = TMP / "kustomized.yaml"
        out.write_text(rendered.stdout)
        expect_success("kubectl kustomize renders; the result validates",
                       [TOOLS / "kubernetes-validate", "--strict", "--quiet", "-k", K8S_VERSION, out])

    docs = {(d["kind"], d["metadata"]["name"]): d for p in manifests for d in load_all(p)}
    deployment = docs[("Deployment", "fapi-gateway")]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    for (kind, name), doc in docs.items():
        selector = (doc.get("spec") or {}).get("selector")
        if kind in ("Service",):
            wanted = selector
        elif kind in ("PodDisruptionBudget", "Deployment"):
            wanted = selector["matchLabels"]
        elif kind == "NetworkPolicy":
            wanted = doc["spec"]["podSelector"]["matchLabels"]
        else:
            continue
        if not wanted or any(labels.get(k) != v for k, v in wanted.items()):
            problem(f"{kind} {name}: selector {wanted} does not select the pods {labels}")
    ok("every selector selects the Deployment's pods")

    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    config_path = env.get("FAPI_GATEWAY_CONFIG", "")
    config_volume = mounts.get(str(Path(config_path).parent), {}).get("configMap", {})
    configmap = docs.get(("ConfigMap", config_volume.get("name")))
    if not configmap or Path(config_path).name not in configmap["data"]:
        problem(f"FAPI_GATEWAY_CONFIG={config_path} is not a key of a mounted ConfigMap")
        return
    config_text = configmap["data"][Path(config_path).name]
    config = yaml.safe_load(config_text)

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    admin_port = int(env.get("FAPI_GATEWAY_ADMIN_ADDRESS", config["admin"]["address"]).rsplit(":", 1)[1])
    if ports.get("https") != int(config["listen"]["address"].rsplit(":", 1)[1]):
        problem(f"containerPort https {ports.get('https')} is not listen.address {config['listen']['address']}")
    if ports.get("admin") != admin_port:
        problem(f"containerPort admin {ports.get('admin')} is not the admin address's port {admin_port}")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = container.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") != "admin":
            problem(f"{probe} is not httpGet {path} on port admin: {got}")
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    if grace <= stop_budget(config):
        problem(f"terminationGracePeriodSeconds {grace} <= shutdown_delay + shutdown_grace {stop_budget(config)}")
    security = container.get("securityContext", {})
    if not (security.get("readOnlyRootFilesystem") and security.get("allowPrivilegeEscalation") is False
            and pod["spec"]["securityContext"].get("runAsNonRoot")):
        problem("the container must run non-root, read-only, without privilege escalation")
    ok(f"ports, probes, terminationGracePeriodSeconds {grace} > {stop_budget(config)}, non-root read-only")
    cli_accepts("Deployment args", container.get("args", []))

    # The ConfigMap's gateway.yaml against files laid out as the Deployment mounts them:
    # every key of each mounted ConfigMap/Secret becomes a file (development certificates
    # from `fapi-gateway dev-as` for the TLS keys, random bytes otherwise).
    root = TMP / "k8s-root"
    dev = TMP / "k8s-dev-certs"
    if not generate_dev_certs(["dev-as", "--address=127.0.0.1:0", f"--dir={dev}"], dev):
        return
    by_key = {"tls.crt": dev / "server.pem", "tls.key": dev / "server.key", "ca.crt": dev / "ca.pem"}
    for mount_path, volume in mounts.items():
        target = root / mount_path.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            source = docs.get(("ConfigMap", volume["configMap"]["name"]))
            keys = list((source or {}).get("data", {}))
        elif "secret" in volume:
            source = docs.get(("Secret", volume["secret"]["secretName"]))
            keys = list((source or {}).get("stringData", {})) + list((source or {}).get("data", {}))
        else:
            continue
        if source is None:
            problem(f"volume mounted at {mount_path} names a ConfigMap/Secret not in deploy/kubernetes")
            continue
        for key in keys:
            if key in by_key:
                shutil.copy(by_key[key], target / key)
            elif "configMap" in volume:
                (target / key).write_text(source["data"][key])
            else:
                (target / key).write_text(base64.b64encode(os.urandom(48)).decode())
    prefixes = sorted({"/" + Path(m).parts[1] + "/" for m in mounts})
    config_copy = TMP / "k8s-gateway.yaml"
    config_copy.write_text(config_text)
    check_config_in(root, config_copy, prefixes, "ConfigMap fapi-gateway-config gateway.yaml")


# ------------------------------------------------------------------------------------------
def check_systemd() -> None:
    print("== deploy/systemd")
    unit = ROOT / "deploy/systemd/fapi-gateway.service"
    text = unit.read_text()
    # systemd-analyze verify wants the binary at its path: point the copy at the built one.
    copy = TMP / "systemd" / unit.name
    copy.parent.mkdir()
    copy.write_text(text.replace("/usr/local/bin/fapi-gateway", str(BIN)))
    expect_success("systemd-analyze verify (any warning fails)", ["systemd-analyze", "verify", copy], quiet_output=True)
    expect_success("systemd-analyze security --offline: exposure at most 2.0",
                   ["systemd-analyze", "security", "--offline=true", "--threshold=20", copy])
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    for key, value in [("Type", "simple"), ("KillSignal", "SIGTERM"), ("Restart", "on-failure"),
                       ("ExecReload", "/bin/kill -HUP $MAINPID"), ("MemoryDenyWriteExecute", "yes"),
                       ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict")]:
        if settings.get(key) != [value]:
            problem(f"{unit.name}: {key}= is {settings.get(key)}, expected {value}")
    stop = parse_duration(settings.get("TimeoutStopSec", ["90s"])[0])
    default_budget = stop_budget({})
    if stop <= default_budget:
        problem(f"TimeoutStopSec {stop}s <= the default shutdown_delay + shutdown_grace ({default_budget}s)")
    ok(f"Type=simple, SIGTERM, HUP reload, on-failure restarts, TimeoutStopSec {stop}s > {default_budget}s")
    for key in ("ExecStartPre", "ExecStart"):
        for command in settings.get(key, []):
            words = command.lstrip("-@+!:").split()
            if words and words[0] == "/usr/local/bin/fapi-gateway":
                cli_accepts(key, words[1:])


def lay_out_pem_files(text: str, root: Path, combined: set[str] = frozenset()) -> None:
    """Creates, under root, every absolute /etc/… file `text` names: the repository's
    development files, by kind (a key, a CA, a certificate; `combined` ones get certificate
    and key in one file, as haproxy wants)."""
    certs = ROOT / "certs"
    for path in sorted(set(re.findall(r"(/etc/[A-Za-z0-9_./-]+)", text))):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        name = Path(path).name
        if path in combined:
            target.write_text((certs / "server.pem").read_text() + (certs / "server.key").read_text())
        elif name.endswith(".key"):
            shutil.copy(certs / "server.key", target)
        elif "ca" in name.split(".")[0].split("-"):
            shutil.copy(certs / "ca.pem", target)
        elif name.endswith(".pem"):
            shutil.copy(certs / "server.pem", target)


def check_examples() -> None:
    """deploy/examples/*: check-config on each gateway.yaml with its /etc/… files laid out,
    and haproxy -c on a haproxy.cfg beside it."""
    print("== deploy/examples")
    for example in sorted(p for p in (ROOT / "deploy/examples").iterdir() if p.is_dir()):
        label = f"deploy/examples/{example.name}"
        root = TMP / "examples" / example.name
        config = example / "gateway.yaml"
        if not (example / "README.md").exists():
            problem(f"{label}: no README.md")
        if config.exists():
            lay_out_pem_files(config.read_text(), root)
            check_config_in(root, config, ["/etc/"], f"{label}/gateway.yaml")
        haproxy_cfg = example / "haproxy.cfg"
        if haproxy_cfg.exists():
            text = haproxy_cfg.read_text()
            crts = set(re.findall(r"\bcrt (/etc/[^ ]+)", text))
            lay_out_pem_files(text, root, combined=crts)
            copy = root / "haproxy.cfg"
            copy.write_text(text.replace("/etc/", f"{root}/etc/"))
            haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
            expect_success(f"{label}/haproxy.cfg: haproxy -c", [haproxy, "-c", "-f", copy])


def main() -> int:
    covered = {ROOT / "deploy/compose/gateway.yaml"}
    covered |= set((ROOT / "deploy/examples").glob("*/gateway.yaml"))
    for stray in sorted(set((ROOT / "deploy").rglob("gateway.yaml")) - covered):
        problem(f"{stray.relative_to(ROOT)}: a gateway.yaml that no check covers")
    try:
        for check in (check_dockerfile, check_context, check_pin_digests, check_compose, check_kubernetes, check_systemd,
                      check_examples):
            try:
                check()
            except Exception as e:  # a broken file should fail its check, not hide the others
                problem(f"{check.__name__} crashed: {type(e).__name__}: {e}")
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    print()
    if PROBLEMS:
        print(f"check-deploy: {len(PROBLEMS)} problem(s)")
        return 1
    print("check-deploy: everything passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
