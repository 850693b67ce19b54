"""lambda-debugger recipe: a Python function with the lambda-debugger layer (AWS CDK v2).

Build the layer first, from the repository root::

    lambda-debugger layer --arch x86_64 --python 3.12 -o dist

Then, in this folder::

    pip install 'aws-cdk-lib>=2.100,<3' 'constructs>=10,<11'
    cdk deploy -c broker_address=ws://broker.lambda-debugger.internal:8080 -c function_id=hello

Context values (``-c name=value``), all optional but ``broker_address``:

- ``debugging``: ``true`` (default) or ``false``; true sets DEBUGGER_ACTIVE=1
  and the 900 s timeout, false runs the function as if the package were not
  there.
- ``broker_address``: DEBUGGER_BROKER_ADDRESS (the broker stacks' output
  ``LambdaBrokerAddress``).
- ``function_id``: DEBUGGER_FUNCTION_ID, default ``hello``.
- ``lambda_token_secret``: name of the Secrets Manager secret holding the
  broker's Lambda token, default ``lambda-debugger-broker/lambda-token``.
- ``wait_max_ms``: DEBUGGER_WAIT_MAX, default 60000.
- ``exec_wrapper``: ``true`` sets AWS_LAMBDA_EXEC_WRAPPER for code without
  the ``import lambda_debugger`` line; default ``false``.
- ``ca_file``: DEBUGGER_CA_FILE, for a wss:// broker with a private CA.
- ``subnet_ids``, ``security_group_ids`` (comma-separated): run the
  function in a VPC; include the broker stacks' ``FunctionSecurityGroupId``.
- ``layer_zip``, ``code_dir``, ``handler``: what to deploy (defaults: the
  layer built above and ``examples/hello.py``).

docs/recipes.md walks through it.
"""

import re
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LAYER_ZIP = ROOT / "dist" / "lambda-debugger-layer-python3.12-x86_64.zip"
DEFAULT_CODE_DIR = ROOT / "examples"
WRAPPER = "/opt/lambda-debugger-wrapper"
FUNCTION_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: Lambda's longest timeout: stepping through code takes minutes.
DEBUG_TIMEOUT = cdk.Duration.seconds(900)
NORMAL_TIMEOUT = cdk.Duration.seconds(30)


class DebuggableFunctionStack(cdk.Stack):
    """A function with the lambda-debugger layer and its ``DEBUGGER_*`` settings."""

    def __init__(self, scope: Construct, construct_id: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        context = self.node.try_get_context
        debugging = str(context("debugging") or "true").lower() == "true"
        function_id = str(context("function_id") or "hello")
        if not FUNCTION_ID_PATTERN.fullmatch(function_id):
            raise ValueError("function_id must be 1-128 letters, digits, '.', '_' or '-'")
        broker_address = context("broker_address")
        if debugging and not broker_address:
            raise ValueError("give the broker: cdk deploy -c broker_address=HOST[:PORT]")

        # For arm64: build the layer with --arch arm64 and change the zip,
        # the layer's architecture and the function's together.
        layer = lambda_.LayerVersion(
            self,
            "DebuggerLayer",
            code=lambda_.Code.from_asset(str(context("layer_zip") or DEFAULT_LAYER_ZIP)),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
            compatible_architectures=[lambda_.Architecture.X86_64],
            description="lambda-debugger, debugpy, websocket-client and " + WRAPPER,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )

        environment = {"DEBUGGER_ACTIVE": "1" if debugging else "0"}
        if debugging:
            # A dynamic reference: CloudFormation resolves it at deploy time,
            # so the token is in neither the code nor the synthesized
            # template. It does end up in the function's configuration,
            # which is why it is the Lambda token, never the debugger token.
            token = cdk.SecretValue.secrets_manager(
                str(context("lambda_token_secret") or "lambda-debugger-broker/lambda-token")
            )
            environment.update(
                DEBUGGER_BROKER_ADDRESS=str(broker_address),
                DEBUGGER_FUNCTION_ID=function_id,
                DEBUGGER_AUTH_TOKEN=token.unsafe_unwrap(),
                DEBUGGER_WAIT_MAX=str(int(context("wait_max_ms") or 60000)),
            )
            if context("ca_file"):
                environment["DEBUGGER_CA_FILE"] = str(context("ca_file"))
            if str(context("exec_wrapper") or "false").lower() == "true":
                environment["AWS_LAMBDA_EXEC_WRAPPER"] = WRAPPER

        function = lambda_.Function(
            self,
            "HelloFunction",
            description="examples/hello.py with lambda-debugger; replace code and handler with your own",
            code=lambda_.Code.from_asset(str(context("code_dir") or DEFAULT_CODE_DIR)),
            # The handler module ends with `import lambda_debugger`, so the
            # layer stays attached when debugging is off; the import is then
            # a no-op.
            handler=str(context("handler") or "hello.handler"),
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.X86_64,
            layers=[layer],
            # debugpy and the forked child need more than the 128 MB default.
            memory_size=512,
            # API Gateway still cuts its request at 29 s: invoke the function
            # directly (aws lambda invoke) while you debug.
            timeout=DEBUG_TIMEOUT if debugging else NORMAL_TIMEOUT,
            environment=environment,
        )
        if context("subnet_ids"):
            # Plain IDs, no VPC lookup: synth needs no AWS credentials.
            function.role.add_managed_policy(
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaVPCAccessExecutionRole")
            )
            function.node.default_child.vpc_config = lambda_.CfnFunction.VpcConfigProperty(
                subnet_ids=_split(context("subnet_ids")),
                security_group_ids=_split(context("security_group_ids") or ""),
            )

        cdk.CfnOutput(self, "FunctionName", value=function.function_name)
        cdk.CfnOutput(self, "LayerVersionArn", value=layer.layer_version_arn)
        cdk.CfnOutput(
            self,
            "AttachCommand",
            value="lambda-debugger attach %s --broker BROKER_DEVELOPER_ADDRESS --token-file ~/.lambda-debugger-token"
            % function_id,
        )


def _split(text) -> list:
    """``a,b`` (or a list already) as a list of non-empty strings."""
    items = text if isinstance(text, list) else str(text).split(",")
    return [item.strip() for item in items if item.strip()]


app = cdk.App()
DebuggableFunctionStack(app, str(app.node.try_get_context("stack_name") or "lambda-debugger-hello"))
app.synth()
