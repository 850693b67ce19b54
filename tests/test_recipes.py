"""The infrastructure recipes in deploy/ and docs/recipes.md.

Nothing here reaches AWS. The templates are parsed and linted, and checked
against the product: the variable names the package reads, the broker's
ports and flags, the wrapper's path, the layer's file name, and the rules of
docs/security.md (port 9229 never open to the functions or the internet).
"""

import ipaddress
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from broker_server.config import BrokerConfig
from lambda_debugger.developer import layer
from lambda_debugger.wire import protocol

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SAM = DEPLOY / "sam" / "template.yaml"
BROKER_EC2 = DEPLOY / "broker-ec2" / "template.yaml"
BROKER_ECS = DEPLOY / "broker-ecs" / "template.yaml"
CFN_TEMPLATES = [SAM, BROKER_EC2, BROKER_ECS]
BROKER_TEMPLATES = [BROKER_EC2, BROKER_ECS]
CDK_APP = DEPLOY / "cdk" / "app.py"
TERRAFORM = DEPLOY / "terraform"
RECIPES_DOC = ROOT / "docs" / "recipes.md"
FUNCTION_RECIPES = [SAM, CDK_APP, TERRAFORM / "main.tf"]

WRAPPER_PATH = "/opt/" + layer.WRAPPER_NAME
LAYER_ZIP = layer.layer_file_name("3.12", "x86_64")
LAMBDA_PORT = protocol.DEFAULT_LAMBDA_PORT
DEBUGGER_PORT = protocol.DEFAULT_DEBUGGER_PORT
#: What every function recipe sets while debugging.
CORE_VARIABLES = {
    "DEBUGGER_ACTIVE",
    "DEBUGGER_BROKER_ADDRESS",
    "DEBUGGER_FUNCTION_ID",
    "DEBUGGER_AUTH_TOKEN",
    "DEBUGGER_WAIT_MAX",
}
DEFAULT_TOKEN_SECRET = "lambda-debugger-broker/lambda-token"


# -- loading --------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation's short forms (!Ref, !Sub, ...)
    as their long forms ({"Ref": ...}, {"Fn::Sub": ...})."""


def _short_form(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else "Fn::" + tag_suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = value.split(".", 1)
        return {name: value}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _short_form)


def load_cfn(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_CfnLoader)


def walk(value, path=()):
    """Every (path, value) pair inside ``value``, depth first."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, path + (index,))


def if_branches(value):
    """The values a property can take: both branches of every Fn::If."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, yes, no = value["Fn::If"]
        return if_branches(yes) + if_branches(no)
    return [value]


def function_environment(template: dict) -> dict:
    (function,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    return function["Properties"]["Environment"]["Variables"]


def render_sub(sub, values: dict) -> str:
    """Fn::Sub with ``values`` for its ${Name}s; ${!Literal} stays literal."""
    text, extra = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])

    def replace(match):
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in extra or name.split(".")[0] in extra:
            return "extra-" + re.sub(r"[^a-z0-9]", "", name.lower())
        return values.get(name, "value-of-" + re.sub(r"[^A-Za-z0-9]", "", name))

    return re.sub(r"\$\{([^}]+)\}", replace, text)


def recipe_files():
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yaml", ".py", ".tf", ".json")]
    return sorted(files) + [RECIPES_DOC]


# -- security groups ------------------------------------------------------


def ingress_rules(template: dict):
    """Every ingress rule: (group, rule, resource condition) for inline rules
    and AWS::EC2::SecurityGroupIngress resources alike."""
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            for rule in resource["Properties"].get("SecurityGroupIngress", []):
                yield name, rule, resource.get("Condition")
        elif resource["Type"] == "AWS::EC2::SecurityGroupIngress":
            props = resource["Properties"]
            yield props["GroupId"]["Ref"], props, resource.get("Condition")


def covers(rule: dict, port: int) -> bool:
    if str(rule.get("IpProtocol")) in ("-1", "all"):
        return True
    return int(rule["FromPort"]) <= port <= int(rule["ToPort"])


def allowed_values(template: dict, value) -> list:
    """A rule's source as literals, or its parameter's pattern when it is a Ref."""
    if isinstance(value, dict) and "Ref" in value:
        return [template["Parameters"][value["Ref"]]]
    return [value]


def debugger_port_violations(template: dict) -> list:
    """What opens port 9229 to anyone but developers (docs/security.md)."""
    problems = []
    for group, rule, _ in ingress_rules(template):
        if not covers(rule, DEBUGGER_PORT):
            continue
        if "SourceSecurityGroupId" in rule or "SourcePrefixListId" in rule:
            problems.append("%s: 9229 from a security group or prefix list %r" % (group, rule))
        if "CidrIpv6" in rule:
            problems.append("%s: 9229 from an IPv6 range" % group)
        for source in allowed_values(template, rule.get("CidrIp")):
            if isinstance(source, dict):  # a parameter: its pattern must refuse the world
                pattern = source.get("AllowedPattern")
                if (
                    pattern is None
                    or re.fullmatch(pattern, "0.0.0.0/0")
                    or re.fullmatch(pattern, "::/0")
                    or re.fullmatch(pattern, "0.0.0.0/1")
                ):
                    problems.append("%s: 9229 from a parameter that allows the internet" % group)
            elif source is None or ipaddress.ip_network(source, strict=False).prefixlen < 8:
                problems.append("%s: 9229 from %s" % (group, source))
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            for rule in resource["Properties"].get("SecurityGroupEgress", []):
                if covers(rule, DEBUGGER_PORT):
                    problems.append("%s: egress to 9229" % name)
    return problems


# -- tests: parsing and linting -------------------------------------------


@pytest.mark.parametrize("path", CFN_TEMPLATES, ids=lambda p: p.parent.name)
def test_templates_parse_as_cloudformation(path):
    template = load_cfn(path)
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"
    assert template["Resources"]
    for name, parameter in template.get("Parameters", {}).items():
        assert parameter.get("Description"), "parameter %s has no description" % name
        if "AllowedPattern" in parameter and "Default" in parameter:
            assert re.fullmatch(parameter["AllowedPattern"], str(parameter["Default"])), name


def test_cdk_files_parse():
    app = json.loads((CDK_APP.parent / "cdk.json").read_text())
    assert app["app"] == "python3 app.py"
    compile(CDK_APP.read_text(), str(CDK_APP), "exec")
    assert app["context"]["lambda_token_secret"] == DEFAULT_TOKEN_SECRET


@pytest.mark.parametrize("path", CFN_TEMPLATES, ids=lambda p: p.parent.name)
def test_cfn_lint_is_clean(path):
    """cfn-lint (a test dependency) finds no error and no warning."""
    from cfnlint import api

    matches = api.lint(path.read_text(), regions=["us-east-1"])
    assert [str(match) for match in matches] == []


def test_cfn_lint_catches_a_broken_template():
    """The lint test can fail: a wrong property is reported."""
    from cfnlint import api

    broken = BROKER_ECS.read_text().replace("ContainerPort: 9229", "ContainerPort: nine")
    assert any("nine" in str(match) for match in api.lint(broken, regions=["us-east-1"]))


# -- tests: consistency with the product ----------------------------------


def test_debugger_variables_exist_in_the_package():
    # The variables the Lambda side reads: DEBUGGER_ACTIVE in the package's
    # __init__ (the import's first check), the others in config.py.
    package = ROOT / "lambda_debugger"
    known = set()
    for source in ("__init__.py", "lambda_side/config.py"):
        known |= set(re.findall(r'environ\.get\("(DEBUGGER_[A-Z_]+)"', (package / source).read_text()))
    assert CORE_VARIABLES <= known
    for path in recipe_files():
        used = set(re.findall(r"\bDEBUGGER_[A-Z_]+\b", path.read_text())) - {"DEBUGGER_PORT"}
        assert used <= known, "%s: %s" % (path.relative_to(ROOT), sorted(used - known))


@pytest.mark.parametrize("path", FUNCTION_RECIPES, ids=lambda p: p.parent.name)
def test_function_recipes_set_the_variables_the_wrapper_and_the_layer(path):
    text = _terraform_text() if path.suffix == ".tf" else path.read_text()
    assert CORE_VARIABLES | {"DEBUGGER_CA_FILE"} <= set(re.findall(r"\bDEBUGGER_[A-Z_]+\b", text))
    assert "AWS_LAMBDA_EXEC_WRAPPER" in text
    wrappers = re.findall(r"[\w/.-]*" + re.escape(layer.WRAPPER_NAME), text)
    assert wrappers and set(wrappers) == {WRAPPER_PATH}
    assert set(re.findall(r"lambda-debugger-layer-[\w.-]+\.zip", text)) == {LAYER_ZIP}
    assert DEFAULT_TOKEN_SECRET in text
    assert "/debugger-token" not in text, "the debugger token must never reach a function"
    assert "python3.12" in text or "PYTHON_3_12" in text


def test_sam_function_while_debugging_and_not():
    template = load_cfn(SAM)
    env = function_environment(template)
    assert set(env) == CORE_VARIABLES | {"DEBUGGER_CA_FILE", "AWS_LAMBDA_EXEC_WRAPPER"}
    assert env["DEBUGGER_ACTIVE"] == {"Fn::If": ["DebuggingOn", "1", "0"]}
    assert if_branches(env["AWS_LAMBDA_EXEC_WRAPPER"]) == [WRAPPER_PATH, {"Ref": "AWS::NoValue"}]
    token = if_branches(env["DEBUGGER_AUTH_TOKEN"])[0]["Fn::Sub"]
    assert token.startswith("{{resolve:secretsmanager:${LambdaTokenSecret}")
    (function,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert function["Properties"]["Timeout"] == {"Fn::If": ["DebuggingOn", 900, 30]}
    assert template["Parameters"]["LambdaTokenSecret"]["Default"] == DEFAULT_TOKEN_SECRET


def test_cdk_and_terraform_raise_the_timeout_while_debugging():
    assert "DEBUG_TIMEOUT = cdk.Duration.seconds(900)" in CDK_APP.read_text()
    assert "timeout=DEBUG_TIMEOUT if debugging else NORMAL_TIMEOUT," in CDK_APP.read_text()
    assert re.search(r"\btimeout\s*=\s*var\.debugging \? 900 : 30\b", (TERRAFORM / "main.tf").read_text())


def test_broker_templates_use_the_broker_ports():
    assert (BrokerConfig().lambda_port, BrokerConfig().debugger_port) == (LAMBDA_PORT, DEBUGGER_PORT)
    for path in BROKER_TEMPLATES:
        template = load_cfn(path)
        ports = {(int(rule["FromPort"]), int(rule["ToPort"])) for _, rule, _ in ingress_rules(template)}
        assert ports == {(LAMBDA_PORT, LAMBDA_PORT), (DEBUGGER_PORT, DEBUGGER_PORT)}, path
        egress = template["Resources"]["FunctionSecurityGroup"]["Properties"]["SecurityGroupEgress"]
        assert [(r["FromPort"], r["ToPort"], r["DestinationSecurityGroupId"]) for r in egress] == [
            (LAMBDA_PORT, LAMBDA_PORT, {"Ref": "BrokerSecurityGroup"})
        ]
        from_functions = [
            rule
            for _, rule, _ in ingress_rules(template)
            if rule.get("SourceSecurityGroupId") == {"Ref": "FunctionSecurityGroup"}
        ]
        assert [(r["FromPort"], r["ToPort"]) for r in from_functions] == [(LAMBDA_PORT, LAMBDA_PORT)]
        for branch in if_branches(template["Outputs"]["LambdaBrokerAddress"]["Value"]):
            assert branch["Fn::Sub"].endswith(":%d" % LAMBDA_PORT)
    containers = load_cfn(BROKER_ECS)["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert [m["ContainerPort"] for m in containers[0]["PortMappings"]] == [LAMBDA_PORT, DEBUGGER_PORT]


@pytest.mark.parametrize("path", BROKER_TEMPLATES, ids=lambda p: p.parent.name)
def test_debugger_port_is_never_open_to_functions_or_the_internet(path):
    template = load_cfn(path)
    assert debugger_port_violations(template) == []
    # 8080 is open to the world only in the EC2 recipe's internet mode,
    # which a template rule ties to TLS.
    for _group, rule, condition in ingress_rules(template):
        if rule.get("CidrIp") == "0.0.0.0/0":
            assert (rule["FromPort"], rule["ToPort"], condition) == (LAMBDA_PORT, LAMBDA_PORT, "InternetAccess")
            assert "InternetNeedsTls" in template["Rules"]


@pytest.mark.parametrize("mutation", ["function-group", "world", "ipv6", "wide-parameter", "all-protocols"])
def test_the_debugger_port_check_catches_violations(mutation):
    """The check above can fail: each way of opening 9229 too wide is caught."""
    template = load_cfn(BROKER_ECS)
    group = template["Resources"]["BrokerSecurityGroup"]["Properties"]
    rule = group["SecurityGroupIngress"][0]
    if mutation == "function-group":
        rule.pop("CidrIp")
        rule["SourceSecurityGroupId"] = {"Ref": "FunctionSecurityGroup"}
    elif mutation == "world":
        rule["CidrIp"] = "0.0.0.0/0"
    elif mutation == "ipv6":
        rule.pop("CidrIp")
        rule["CidrIpv6"] = "::/0"
    elif mutation == "wide-parameter":
        template["Parameters"]["DeveloperCidr"]["AllowedPattern"] = ".*"
    else:
        group["SecurityGroupIngress"].append({"IpProtocol": "-1", "CidrIp": "0.0.0.0/4"})
    assert debugger_port_violations(template)


def test_developer_cidr_refuses_the_internet():
    for path in BROKER_TEMPLATES:
        pattern = load_cfn(path)["Parameters"]["DeveloperCidr"]["AllowedPattern"]
        for wide in ("0.0.0.0/0", "::/0", "10.0.0.0/7", "0.0.0.0/00", "10.0.0.0/33"):
            assert not re.fullmatch(pattern, wide), (path, wide)
        for fine in ("10.8.0.0/16", "192.168.1.10/32", "10.0.0.0/8"):
            assert re.fullmatch(pattern, fine), (path, fine)


@pytest.mark.parametrize("path", BROKER_TEMPLATES, ids=lambda p: p.parent.name)
def test_broker_tokens_are_two_generated_secrets(path):
    template = load_cfn(path)
    resources = template["Resources"]
    for name, suffix in (("LambdaTokenSecret", "lambda-token"), ("DebuggerTokenSecret", "debugger-token")):
        secret = resources[name]
        assert secret["Type"] == "AWS::SecretsManager::Secret"
        assert secret["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}/" + suffix}
        assert secret["Properties"]["GenerateSecretString"]["ExcludePunctuation"] is True
    text = path.read_text()
    # No token value, and no token in a plain environment variable.
    for _, value in walk(template):
        if isinstance(value, dict) and "Environment" in value:
            names = {item["Name"] for item in value["Environment"]}
            assert not names & {"BROKER_LAMBDA_TOKEN", "BROKER_DEBUGGER_TOKEN"}
    assert "--insecure" not in text


def test_ecs_broker_reads_tokens_through_ecs_secrets():
    (container,) = load_cfn(BROKER_ECS)["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    secrets = {item["Name"]: item["ValueFrom"] for item in container["Secrets"] if "Name" in item}
    assert secrets == {
        "BROKER_LAMBDA_TOKEN": {"Ref": "LambdaTokenSecret"},
        "BROKER_DEBUGGER_TOKEN": {"Ref": "DebuggerTokenSecret"},
    }
    service = load_cfn(BROKER_ECS)["Resources"]["Service"]["Properties"]
    assert service["DesiredCount"] == 1, "pairing is in memory: exactly one broker"
    assert service["DeploymentConfiguration"]["MaximumPercent"] == 100
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"


def _broker_flags(capsys) -> set:
    from broker_server.app import main

    with pytest.raises(SystemExit):
        main(["--help"])
    return set(re.findall(r"--[a-z][a-z-]+", capsys.readouterr().out))


def _ec2_user_data() -> str:
    template = load_cfn(BROKER_EC2)
    user_data = template["Resources"]["Instance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    return render_sub(user_data, {"TlsCertificateSecret": "", "TlsKeySecret": ""})


def test_ec2_user_data_is_valid_shell_and_uses_real_broker_flags(capsys):
    script = _ec2_user_data()
    assert script.startswith("#!/bin/bash\n")
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    flags = set(re.findall(r"(?<![\w-])--(?:lambda|debugger|host|certfile|keyfile)[a-z-]*", script))
    assert {"--lambda-token-file", "--debugger-token-file", "--certfile", "--keyfile", "--host"} <= flags
    assert flags <= _broker_flags(capsys)
    assert "-p 8080:8080 -p 9229:9229" in script


def test_ec2_user_data_check_can_fail():
    broken = _ec2_user_data().replace("fi\n", "\n", 1)
    assert subprocess.run(["bash", "-n"], input=broken, capture_output=True, text=True, timeout=30).returncode != 0


def test_ecs_entry_point_uses_real_broker_flags(capsys):
    (container,) = load_cfn(BROKER_ECS)["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    command = if_branches(container["EntryPoint"])[0][2]
    assert "exec python -m broker_server" in command
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", command))
    assert flags == {"--host", "--certfile", "--keyfile"} and flags <= _broker_flags(capsys)
    for check in if_branches(container["HealthCheck"]["Command"]):
        assert ":%d/healthz" % DEBUGGER_PORT in check[-1]


FUNCTION_IDS = ["hello", "my.fn_v-2", "a" * 128, "a" * 129, "", "bad/id", "with space", "ünï"]
ADDRESSES = [
    "broker.internal",
    "10.0.0.5:8080",
    "ws://b.example.com",
    "wss://b.example.com:443/",
    "http://b/x",
    "b:99999",
    "b:0",
    "b:65536",
    "user@b",
    "ws://",
    "b c",
    "[::1]:8080",
    "ws://b:1/x",
]


def _recipe_patterns():
    sam = load_cfn(SAM)["Parameters"]
    variables = (TERRAFORM / "variables.tf").read_text()
    tf_id = re.search(r'regex\("(.+?)", var\.function_id\)', variables).group(1).replace("\\\\", "\\")
    tf_address = re.search(r'regex\("(.+?)", var\.broker_address\)', variables).group(1).replace("\\\\", "\\")
    cdk_id = re.search(r're\.compile\(r"(.+?)"\)', CDK_APP.read_text()).group(1)
    return (
        [sam["FunctionId"]["AllowedPattern"], tf_id, "^%s$" % cdk_id],
        [sam["BrokerAddress"]["AllowedPattern"], tf_address],
    )


def test_function_id_patterns_match_the_package():
    id_patterns, _ = _recipe_patterns()
    for function_id in FUNCTION_IDS:
        expected = protocol.valid_function_id(function_id)
        for pattern in id_patterns:
            assert bool(re.fullmatch(pattern, function_id)) == expected, (pattern, function_id)


def test_broker_address_patterns_accept_only_what_the_package_accepts():
    _, address_patterns = _recipe_patterns()
    for pattern in address_patterns:
        for address in ADDRESSES:
            if re.fullmatch(pattern, address):
                protocol.broker_url(address, LAMBDA_PORT, "/lambda/x")  # raises if the package refuses it
        for documented in ("broker.internal", "10.0.0.5:8080", "ws://b.example.com", "wss://b.example.com:65535/"):
            assert re.fullmatch(pattern, documented), (pattern, documented)
        for refused in ("b:99999", "b:0", "http://b/x", "ws://", "b c"):
            assert not re.fullmatch(pattern, refused), (pattern, refused)


# -- tests: Terraform -----------------------------------------------------


def _terraform_text() -> str:
    return "\n".join(path.read_text() for path in sorted(TERRAFORM.glob("*.tf")))


def test_terraform_files_parse():
    import hcl2

    blocks = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as source:
            for key, value in hcl2.load(source).items():
                blocks.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    assert {"terraform", "locals", "resource", "data", "variable", "output"} <= set(blocks)
    resources = {key.strip('"') for block in blocks["resource"] for key in block}
    assert {"aws_lambda_layer_version", "aws_lambda_function"} <= resources


def test_terraform_references_are_declared():
    text = _terraform_text()
    code = re.sub(r"(?m)#.*$", "", text)
    declared_vars = set(re.findall(r'variable "(\w+)"', code))
    used_vars = set(re.findall(r"\bvar\.(\w+)", code))
    assert used_vars == declared_vars
    locals_block = re.search(r"(?s)\nlocals \{(.*?)\n\}", code).group(1)
    declared_locals = set(re.findall(r"(?m)^  (\w+)\s*=", locals_block))
    assert set(re.findall(r"\blocal\.(\w+)", code)) <= declared_locals
    resources = set(re.findall(r'resource "(\w+)" "(\w+)"', code))
    data = set(re.findall(r'data "(\w+)" "(\w+)"', code))
    for kind, name in re.findall(r"(?<![\w.])(aws_\w+)\.(\w+)\.", code):
        assert (kind, name) in resources, (kind, name)
    for kind, name in re.findall(r"\bdata\.(\w+)\.(\w+)", code):
        assert (kind, name) in data, (kind, name)


# -- tests: the docs --------------------------------------------------------


def test_recipes_doc_names_every_recipe_and_only_real_paths():
    text = RECIPES_DOC.read_text()
    for path in [SAM, BROKER_EC2, BROKER_ECS, CDK_APP, TERRAFORM / "main.tf"]:
        assert str(path.relative_to(ROOT)) in text
    for mentioned in set(re.findall(r"\bdeploy/[\w./-]+\w", text)):
        assert (ROOT / mentioned).exists(), mentioned
    assert "lambda-debugger layer --arch x86_64 --python 3.12 -o dist" in text
    assert "docker build -f docker/Dockerfile" in text
    assert "29 s" in text and "900 s" in text
