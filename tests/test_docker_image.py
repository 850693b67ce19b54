"""The broker image (docker/Dockerfile), checked and replayed without Docker.

No Docker engine runs where the suite runs, so this file reads the
Dockerfile itself, and follows it when it changes:

* it checks what the image promises: a slim Python base pinned by version,
  the same in every stage; a numeric non-root USER; ports 8080 and 9229;
  exec-form ENTRYPOINT, CMD and HEALTHCHECK; no token in any ENV or ARG;
  only the package's sources copied in, none of them excluded by
  .dockerignore, which keeps secrets out of the build context;
* it replays the build under a temporary root that stands for the image's
  ``/``: the files the COPY lines name (minus what .dockerignore excludes),
  the RUN steps (``python -m venv``, pip) with this Python standing in for
  the base image's, then keeps only what the runtime stage copies from the
  build stage;
* it runs the exact ENTRYPOINT and CMD with the image's ENV, from that root,
  with tokens from the environment, from mounted files (``/run/secrets``)
  and with TLS; checks ``/healthz`` on both ports; and runs the HEALTHCHECK
  command unmodified, pointed at the test's port by BROKER_HEALTHCHECK_URL,
  which the image documents for that purpose.

Not checked here: ``docker build`` itself, the base image's Python (3.12
there, whatever runs the suite here), the user and group the image creates,
and file ownership inside the image.
"""

import configparser
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pytest
import trustme

from lambda_debugger.wire.protocol import DEFAULT_DEBUGGER_PORT, DEFAULT_LAMBDA_PORT
from tests.support.chain import (
    DEBUGGER_TOKEN,
    LAMBDA_TOKEN,
    REPO,
    free_port,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

DOCKERFILE = os.path.join(REPO, "docker", "Dockerfile")
DOCKERIGNORE = os.path.join(REPO, ".dockerignore")
#: The variable the image's health check reads its URL from.
HEALTHCHECK_URL_VARIABLE = "BROKER_HEALTHCHECK_URL"
#: Commands of RUN steps that cannot be replayed outside a container and
#: need not be: they only create the image's user.
USER_COMMANDS = {"groupadd", "useradd", "addgroup", "adduser"}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE_KEY", re.IGNORECASE)


# The Dockerfile, parsed ----------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    rest: str
    line: int

    def exec_form(self) -> List[str]:
        """The instruction's JSON array, or a test failure if it is in shell form."""
        return exec_form(self.rest, "%s (line %d)" % (self.keyword, self.line))


@dataclass
class Stage:
    image: str
    name: Optional[str]
    instructions: List[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> List[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, "the runtime stage of docker/Dockerfile has no %s" % keyword
        return found[-1]


def exec_form(text: str, what: str) -> List[str]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    assert isinstance(value, list) and value and all(isinstance(v, str) for v in value), (
        "%s must be in exec form, a JSON array of strings: %s" % (what, text)
    )
    return value


def read_instructions(text: str) -> List[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions, pending, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        start = start or number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip(), start))
        pending, start = "", 0
    return instructions


def parse_dockerfile(text: str) -> List[Stage]:
    arguments: Dict[str, str] = {}  # ARGs before the first FROM
    stages: List[Stage] = []
    for instruction in read_instructions(text):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: arguments[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(image, name))
        elif not stages:
            assert instruction.keyword == "ARG", "only ARG may come before FROM"
            arguments.update(variables(instruction))
        else:
            stages[-1].instructions.append(instruction)
    assert stages, "docker/Dockerfile has no FROM"
    return stages


def variables(instruction: Instruction) -> Dict[str, str]:
    """The names and values an ENV or ARG line sets (ARG without default: empty)."""
    words = shlex.split(instruction.rest)
    if instruction.keyword == "ENV" and "=" not in words[0]:  # legacy `ENV NAME value`
        return {words[0]: instruction.rest.split(None, 1)[1]}
    return dict(w.split("=", 1) if "=" in w else (w, "") for w in words)


def copy_parts(instruction: Instruction):
    """(options, sources, destination) of a COPY line."""
    words = exec_form(instruction.rest, "COPY") if instruction.rest.startswith("[") else shlex.split(instruction.rest)
    options = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return options, paths[:-1], paths[-1]


def healthcheck_parts(instruction: Instruction):
    """(options, command) of a HEALTHCHECK line."""
    match = re.fullmatch(r"((?:--[\w-]+=\S+\s+)*)CMD\s+(.+)", instruction.rest, re.DOTALL)
    assert match, "HEALTHCHECK must be `HEALTHCHECK [--option=value ...] CMD [...]`"
    options = dict(o[2:].split("=", 1) for o in match.group(1).split())
    return options, exec_form(match.group(2), "HEALTHCHECK CMD")


def seconds(duration: str) -> float:
    """A Docker (Go) duration such as ``5s``, ``1m30s`` or ``500ms``."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, "not a duration: %s" % duration
    return sum(float(amount) * units[unit] for amount, unit in parts)


# .dockerignore, with Docker's matching rules ---------------------------------


def ignore_rules():
    rules = []
    with open(DOCKERIGNORE) as source:
        for line in source:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((negated, re.compile(pattern_regex(pattern))))
    return rules


def pattern_regex(pattern: str) -> str:
    """Go's filepath.Match syntax plus ``**``, as Docker's pattern matcher reads it."""
    regex, i = "^", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2 + pattern.startswith("/", i + 2)
            regex += (".*" if regex == "^" else "(/.*)?") if i == len(pattern) else "(.*/)?"
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return regex + "$"


def ignored(relative: str, rules) -> bool:
    """Whether Docker leaves ``relative`` (or a folder above it) out of the context."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negated, regex in rules:
        if any(regex.match(c) for c in candidates):
            result = not negated
    return result


# Static checks -----------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> List[Stage]:
    with open(DOCKERFILE) as source:
        return parse_dockerfile(source.read())


def test_base_image_is_a_slim_python_pinned_by_version(stages):
    images = {stage.image for stage in stages}
    assert len(images) == 1, "every stage must use the same base image (the venv links to its Python): %s" % images
    image = images.pop()
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image)
    assert match, "pin a slim Python by its full version, e.g. python:3.12.12-slim-bookworm: %s" % image
    setup = configparser.ConfigParser()
    setup.read(os.path.join(REPO, "setup.cfg"))
    required = re.search(r">=\s*(\d+)\.(\d+)", setup["options"]["python_requires"])
    assert (int(match.group(1)), int(match.group(2))) >= (int(required.group(1)), int(required.group(2)))


def test_runs_as_a_numeric_non_root_user(stages):
    user, _, group = stages[-1].last("USER").rest.partition(":")
    assert user not in ("0", "root") and group not in ("0", "root")
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot check it: %s" % user
    for run in stages[-1].all("RUN"):
        for uid in re.findall(r"--uid[= ](\d+)", run.rest):
            assert uid == user, "the user created (uid %s) is not the USER (%s)" % (uid, user)


def test_exposes_both_ports(stages):
    ports = {word.split("/")[0] for expose in stages[-1].all("EXPOSE") for word in expose.rest.split()}
    assert {str(DEFAULT_LAMBDA_PORT), str(DEFAULT_DEBUGGER_PORT)} <= ports == {"8080", "9229"}


def test_no_secret_is_baked_in(stages):
    for stage in stages:
        for instruction in stage.all("ENV") + stage.all("ARG"):
            for name, value in variables(instruction).items():
                assert not (SECRET_NAME.search(name) and value), (
                    "line %d bakes %s into the image; pass it at run time" % (instruction.line, name)
                )
    with open(DOCKERFILE) as source:
        text = source.read()
    assert LAMBDA_TOKEN not in text and DEBUGGER_TOKEN not in text and "Bearer" not in text
    final = stages[-1]
    for argv in (
        final.last("ENTRYPOINT").exec_form(),
        final.last("CMD").exec_form(),
        healthcheck_parts(final.last("HEALTHCHECK"))[1],
    ):
        assert "--insecure" not in argv
    # Secrets lying around the working tree never reach the build context.
    rules = ignore_rules()
    for path in (
        ".env",
        "broker.env",
        "certs/privkey.pem",
        "lambda_debugger/server.key",
        "secrets/broker_lambda_token",
        "debugger-token.txt",
        "tls/broker.crt",
    ):
        assert ignored(path, rules), ".dockerignore lets %s into the build context" % path


def test_copies_only_the_package_sources(stages):
    rules = ignore_rules()
    names = [stage.name for stage in stages]
    for stage in stages:
        for instruction in stage.all("COPY"):
            options, sources, destination = copy_parts(instruction)
            if "from" in options:
                assert options["from"] in names[: stages.index(stage)], "COPY --from names no earlier stage"
                assert sources == [destination], "a venv cannot move: copy it to the same path"
                continue
            for source in sources:
                top = os.path.normpath(source).split(os.sep)[0]
                assert top not in ("tests", "docs", "bench", "examples", ".ci", ".git"), source
                assert not re.search(r"\.(pem|key|env)$|token|secret", source, re.IGNORECASE), source
                assert os.path.exists(os.path.join(REPO, source)), "COPY names a missing file: %s" % source
                assert not ignored(os.path.normpath(source), rules), (
                    ".dockerignore excludes %s, which the Dockerfile copies: the build would fail" % source
                )


def test_entrypoint_cmd_and_healthcheck(stages):
    final = stages[-1]
    entrypoint = final.last("ENTRYPOINT").exec_form()
    assert entrypoint[-2:] == ["-m", "broker_server"], entrypoint
    final.last("CMD").exec_form()
    options, command = healthcheck_parts(final.last("HEALTHCHECK"))
    assert seconds(options["timeout"]) <= seconds(options["interval"])
    script = " ".join(command)
    assert HEALTHCHECK_URL_VARIABLE in script, "the health check's URL must come from %s" % HEALTHCHECK_URL_VARIABLE
    assert "http://127.0.0.1:%d/healthz" % DEFAULT_DEBUGGER_PORT in script, "the default URL is the debugger port's"


def test_the_readme_repeats_the_healthcheck_exactly(stages):
    # ECS ignores an image's HEALTHCHECK, so docker/README.md repeats it in
    # a task definition; the two must not drift apart.
    with open(os.path.join(REPO, "docker", "README.md")) as readme:
        blocks = re.findall(r"```json\n(.*?)```", readme.read(), re.DOTALL)
    commands = [json.loads(b)["healthCheck"]["command"] for b in blocks if '"healthCheck"' in b]
    assert commands, "docker/README.md no longer shows the ECS health check"
    for command in commands:
        assert command == ["CMD"] + healthcheck_parts(stages[-1].last("HEALTHCHECK"))[1]


# The build, replayed -------------------------------------------------------------


class Image:
    """A temporary folder standing for the image's ``/``, built as the Dockerfile says."""

    def __init__(self, stages: List[Stage], root: str):
        self.stages, self.root = stages, root
        self.paths: List[str] = []  # image paths the build created
        self.venvs: List[str] = []  # the venvs among them
        self.env: Dict[str, str] = {}

    def host(self, arg: str) -> str:
        """``arg`` with an image path the build created turned into the folder that stands for it."""
        for path in self.paths:
            if arg == path or arg.startswith((path + "/", path + "[")):
                return self.root + arg
        return arg

    def command(self, argv: List[str], env: Dict[str, str], resolve: bool = False) -> List[str]:
        """``argv`` as it would run in the image.

        A bare program name is looked up on the image's PATH when ``resolve``
        (at run time, where the venv comes first); the base image's Python,
        bare or by path, is this Python otherwise (at build time).
        """
        argv = [self.host(a) for a in argv]
        if resolve and "/" not in argv[0]:
            argv[0] = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
        if argv[0] in ("python", "python3") or re.fullmatch(r"/usr/(local/)?bin/python[\d.]*", argv[0]):
            argv[0] = sys.executable
        return argv

    def build(self) -> None:
        rules = ignore_rules()
        for stage in self.stages:
            stage_env: Dict[str, str] = {}
            for instruction in stage.instructions:
                if instruction.keyword == "ENV":
                    for name, value in variables(instruction).items():
                        value = re.sub(r"\$\{?PATH\}?", os.environ.get("PATH", os.defpath), value)
                        stage_env[name] = ":".join(self.host(p) for p in value.split(":"))
                elif instruction.keyword == "COPY":
                    options, sources, destination = copy_parts(instruction)
                    if "from" not in options:  # --from: the same path, already here
                        self.copy_from_context(sources, destination, rules)
                elif instruction.keyword == "RUN":
                    self.run(instruction, stage_env)
            self.env = stage_env
        if len(self.stages) > 1:
            keep = [copy_parts(c)[2] for c in self.stages[-1].all("COPY")]
            self.prune([os.path.normpath(self.root + path) for path in keep])

    def copy_from_context(self, sources: List[str], destination: str, rules) -> None:
        target = self.root + destination
        for source in sources:
            origin = os.path.join(REPO, source)
            if os.path.isdir(origin):  # Docker copies a folder's contents

                def skip(folder, names):
                    relative = os.path.relpath(folder, REPO)
                    return [n for n in names if ignored(os.path.normpath(os.path.join(relative, n)), rules)]

                shutil.copytree(origin, target, ignore=skip, dirs_exist_ok=True)
            else:
                os.makedirs(target if destination.endswith("/") else os.path.dirname(target), exist_ok=True)
                shutil.copy2(origin, target if not destination.endswith("/") else target + os.path.basename(source))
        self.paths.append(destination.rstrip("/"))

    def run(self, instruction: Instruction, stage_env: Dict[str, str]) -> None:
        env = dict(os.environ, PIP_NO_INPUT="1", **stage_env)
        for step in re.split(r"\s*&&\s*", instruction.rest):
            argv = shlex.split(step)
            if argv[0] in USER_COMMANDS:
                continue
            if argv[1:3] == ["-m", "venv"]:
                self.paths.append(argv[-1])
                self.venvs.append(argv[-1])
                timeout = 60
            elif os.path.basename(argv[0]) in ("pip", "pip3") or argv[1:3] == ["-m", "pip"]:
                # Reuse pip's cache: the test only needs the same result, fast.
                argv = [a for a in argv if a != "--no-cache-dir"]
                if stage_env.get("PIP_NO_CACHE_DIR"):
                    env.pop("PIP_NO_CACHE_DIR", None)
                timeout = 180
            else:
                pytest.fail("RUN step the test cannot replay (line %d): %s" % (instruction.line, step))
            done = subprocess.run(
                self.command(argv, env),
                env=env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
            assert done.returncode == 0, "%s failed:\n%s" % (step, done.stdout.decode(errors="replace"))

    def prune(self, keep: List[str]) -> None:
        """Leave only ``keep`` (and the folders above them): the runtime stage's files."""
        for folder, folders, files in os.walk(self.root):
            for name in list(folders) + files:
                path = os.path.join(folder, name)
                if any(path == k or path.startswith(k + os.sep) for k in keep):
                    if name in folders:
                        folders.remove(name)
                elif not any(k.startswith(path + os.sep) for k in keep):
                    if name in folders:
                        folders.remove(name)
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)


@pytest.fixture(scope="module")
def image(stages):
    try:
        import ensurepip  # noqa: F401
    except ImportError:
        pytest.skip("this Python cannot create a venv with pip (Debian/Ubuntu: install python3-venv)")
    root = tempfile.mkdtemp(prefix="lambda-debugger-image-")
    try:
        built = Image(stages, root)
        built.build()
        # What Docker adds: the base image's locale, the user's home.
        built.env = dict({"LANG": "C.UTF-8", "HOME": "/nonexistent"}, **built.env)
        yield built
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_runtime_has_the_venv_and_not_the_sources(image):
    assert image.venvs, "the Dockerfile no longer builds a venv; teach the test how it installs"
    venv = image.root + image.venvs[-1]
    assert not os.path.exists(image.root + "/tmp/src"), "the sources must stay in the build stage"
    probe = "import broker_server, tornado; print(broker_server.__file__)"
    done = subprocess.run(
        image.command(["python", "-c", probe], image.env, resolve=True),
        env=image.env,
        cwd=image.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.decode().startswith(venv + "/"), "broker_server comes from elsewhere: %s" % done.stdout
    check = subprocess.run(
        [venv + "/bin/python", "-m", "pip", "check"],
        env=image.env,
        cwd=image.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout


# The image, run ----------------------------------------------------------------


class Broker:
    """The image's ENTRYPOINT with ``args`` (Docker's CMD or `docker run` arguments)."""

    def __init__(self, image: Image, args: List[str], env: Dict[str, str], log_path: str, context=None):
        self.image, self.env, self.log_path, self.context = image, env, log_path, context
        self.lambda_port, self.debugger_port = free_port(), free_port()
        self.scheme = "https" if context else "http"
        entrypoint = image.stages[-1].last("ENTRYPOINT").exec_form()
        # Appended, so they override CMD's --host 0.0.0.0 and the default
        # ports (argparse keeps the last value): the test listens on loopback
        # and on free ports only.
        overrides = [
            "--host",
            "127.0.0.1",
            "--lambda-port",
            str(self.lambda_port),
            "--debugger-port",
            str(self.debugger_port),
        ]
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            image.command(entrypoint, env, resolve=True) + args + overrides,
            env=env,
            cwd=image.root,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._healthy, 20, "the broker's /healthz")
        except BaseException:
            self.stop()
            raise

    def url(self, port: int, path: str) -> str:
        return "%s://127.0.0.1:%d%s" % (self.scheme, port, path)

    def get(self, port: int, path: str, token: Optional[str] = None):
        headers = {"Authorization": "Bearer " + token} if token else {}
        request = urllib.request.Request(self.url(port, path), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.context) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            with open(self.log_path, errors="replace") as log:
                raise AssertionError("the broker exited with %s:\n%s" % (self.process.returncode, log.read()))
        try:
            return self.get(self.debugger_port, "/healthz")[0] == 200
        except OSError:
            return False

    def healthcheck(self) -> subprocess.CompletedProcess:
        """The image's HEALTHCHECK command, unmodified, as Docker runs it (within its --timeout)."""
        options, command = healthcheck_parts(self.image.stages[-1].last("HEALTHCHECK"))
        env = dict(self.env, **{HEALTHCHECK_URL_VARIABLE: self.url(self.debugger_port, "/healthz")})
        return subprocess.run(
            self.image.command(command, env, resolve=True),
            env=env,
            cwd=self.image.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=seconds(options.get("timeout", "30s")),
            check=False,
        )

    def stop(self) -> Optional[int]:
        stop_process(self.process)
        self.log.close()
        return self.process.returncode


def check_served_and_healthy(broker: Broker) -> None:
    """Both ports answer /healthz, the debugger token (only) opens the API, and the health check passes."""
    try:
        for port in (broker.lambda_port, broker.debugger_port):
            status, body = broker.get(port, "/healthz")
            assert (status, json.loads(body)) == (200, {"status": "ok"}), port
        assert broker.get(broker.debugger_port, "/api/sessions", DEBUGGER_TOKEN) == (200, b"[]")
        assert broker.get(broker.debugger_port, "/api/sessions", LAMBDA_TOKEN)[0] == 401
        assert broker.get(broker.debugger_port, "/api/sessions")[0] == 401
        done = broker.healthcheck()
        assert done.returncode == 0, done.stdout
    finally:
        status = broker.stop()
    with open(broker.log_path, errors="replace") as log:
        output = log.read()
    assert status == 0, "docker stop (SIGTERM) must end the broker cleanly:\n" + output
    assert LAMBDA_TOKEN[4:12] not in output and DEBUGGER_TOKEN[4:12] not in output
    assert "/healthz" not in output, "a health check every 30 s must not fill the log"
    done = broker.healthcheck()
    assert done.returncode == 1, "a stopped broker must be unhealthy (1; Docker reserves 2): %s" % done.stdout


def container_env(image: Image, **extra: str) -> Dict[str, str]:
    return dict(image.env, **extra)


def test_entrypoint_and_cmd_with_tokens_from_the_environment(image, tmp_path):
    env = container_env(image, BROKER_LAMBDA_TOKEN=LAMBDA_TOKEN, BROKER_DEBUGGER_TOKEN=DEBUGGER_TOKEN)
    cmd = image.stages[-1].last("CMD").exec_form()
    check_served_and_healthy(Broker(image, cmd, env, str(tmp_path / "broker.log")))


def test_tokens_from_mounted_files(image, tmp_path):
    # What `docker run -v ...:/run/secrets:ro` or Docker/Compose secrets
    # provide; the arguments replace CMD as `docker run IMAGE ARGS` does.
    secrets = image.root + "/run/secrets"
    os.makedirs(secrets, exist_ok=True)
    for name, token in (("broker_lambda_token", LAMBDA_TOKEN), ("broker_debugger_token", DEBUGGER_TOKEN + "\n")):
        with open(os.path.join(secrets, name), "w") as secret:
            secret.write(token)
        os.chmod(os.path.join(secrets, name), 0o400)
    args = [
        "--lambda-token-file",
        secrets + "/broker_lambda_token",
        "--debugger-token-file",
        secrets + "/broker_debugger_token",
    ]
    check_served_and_healthy(Broker(image, args, container_env(image), str(tmp_path / "broker.log")))


def test_healthcheck_over_tls(image, tmp_path):
    # The certificate names a public host, not 127.0.0.1: the health check
    # must pass anyway, as the Dockerfile says.
    ca = trustme.CA()
    server = ca.issue_cert("broker.example.com")
    certs = image.root + "/certs"
    os.makedirs(certs, exist_ok=True)
    server.private_key_and_cert_chain_pem.write_to_path(certs + "/privkey.pem")
    for blob in server.cert_chain_pems:
        blob.write_to_path(certs + "/fullchain.pem", append=True)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    env = container_env(image, BROKER_LAMBDA_TOKEN=LAMBDA_TOKEN, BROKER_DEBUGGER_TOKEN=DEBUGGER_TOKEN)
    args = ["--certfile", certs + "/fullchain.pem", "--keyfile", certs + "/privkey.pem"]
    check_served_and_healthy(Broker(image, args, env, str(tmp_path / "broker.log"), context=context))
