# lambda-debugger recipe: a Python function with the lambda-debugger layer (Terraform).
#
# Build the layer first, from the repository root:
#   lambda-debugger layer --arch x86_64 --python 3.12 -o dist
# Then, in this folder:
#   terraform init
#   terraform apply -var broker_address=ws://broker.lambda-debugger.internal:8080
# docs/recipes.md walks through it. -var debugging=false turns it all off again.

terraform {
  required_version = ">= 1.3"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4"
    }
  }
}

locals {
  layer_zip = coalesce(var.layer_zip, "${path.module}/../../dist/lambda-debugger-layer-python3.12-x86_64.zip")
  code_dir  = coalesce(var.code_dir, "${path.module}/../../examples")
  in_vpc    = length(var.subnet_ids) > 0

  # Only set while debugging: with debugging off the function has no
  # DEBUGGER_* settings but DEBUGGER_ACTIVE=0, and its import is a no-op.
  debugger_environment = var.debugging ? merge(
    {
      DEBUGGER_ACTIVE         = "1"
      DEBUGGER_BROKER_ADDRESS = var.broker_address
      DEBUGGER_FUNCTION_ID    = var.function_id
      DEBUGGER_AUTH_TOKEN     = data.aws_secretsmanager_secret_version.lambda_token[0].secret_string
      DEBUGGER_WAIT_MAX       = tostring(var.wait_max_ms)
    },
    var.ca_file == "" ? {} : { DEBUGGER_CA_FILE = var.ca_file },
    var.exec_wrapper ? { AWS_LAMBDA_EXEC_WRAPPER = "/opt/lambda-debugger-wrapper" } : {},
  ) : { DEBUGGER_ACTIVE = "0" }
}

# The broker stacks generate this secret. The value ends up in the function's
# configuration (readable with lambda:GetFunctionConfiguration) and in the
# Terraform state, which is why it is the Lambda token, never the debugger
# token. Keep the state encrypted all the same.
data "aws_secretsmanager_secret_version" "lambda_token" {
  count     = var.debugging ? 1 : 0
  secret_id = var.lambda_token_secret
}

resource "aws_lambda_layer_version" "debugger" {
  layer_name               = "${var.function_name}-lambda-debugger"
  description              = "lambda-debugger, debugpy, websocket-client and /opt/lambda-debugger-wrapper"
  filename                 = local.layer_zip
  source_code_hash         = filebase64sha256(local.layer_zip)
  compatible_runtimes      = ["python3.12"]
  compatible_architectures = ["x86_64"]
}

data "archive_file" "code" {
  type        = "zip"
  source_dir  = local.code_dir
  output_path = "${path.module}/build/${var.function_name}.zip"
}

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name_prefix        = "${var.function_name}-"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy_attachment" "logs" {
  role       = aws_iam_role.function.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

resource "aws_iam_role_policy_attachment" "vpc" {
  count      = local.in_vpc ? 1 : 0
  role       = aws_iam_role.function.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_lambda_function" "hello" {
  function_name    = var.function_name
  description      = "examples/hello.py with lambda-debugger; replace code_dir and handler with your own"
  role             = aws_iam_role.function.arn
  filename         = data.archive_file.code.output_path
  source_code_hash = data.archive_file.code.output_base64sha256
  handler          = var.handler
  runtime          = "python3.12"
  # For arm64: build the layer with --arch arm64 and change the zip, the
  # layer's architecture and this together.
  architectures = ["x86_64"]
  # The layer stays attached when debugging is off: the handler module
  # imports lambda_debugger, which is then a no-op.
  layers = [aws_lambda_layer_version.debugger.arn]
  # debugpy and the forked child need more than the 128 MB default.
  memory_size = 512
  # Stepping through code takes minutes: 900 s (Lambda's longest) while
  # debugging. API Gateway still cuts its request at 29 s, so invoke the
  # function directly (aws lambda invoke) while you debug.
  timeout = var.debugging ? 900 : 30

  environment {
    variables = local.debugger_environment
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  depends_on = [aws_iam_role_policy_attachment.logs, aws_iam_role_policy_attachment.vpc]

  lifecycle {
    precondition {
      condition     = !var.debugging || var.broker_address != ""
      error_message = "Give the broker: -var broker_address=HOST[:PORT] (or -var debugging=false)."
    }
  }
}
