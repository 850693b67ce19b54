variable "debugging" {
  description = "true sets DEBUGGER_ACTIVE=1 and the 900 s timeout; false runs the function as if the package were not there."
  type        = bool
  default     = true
}

variable "broker_address" {
  description = "DEBUGGER_BROKER_ADDRESS: host, host:port, ws://host[:port] or wss://host[:port] (port 8080 by default); the broker stacks' LambdaBrokerAddress output."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^((wss?)://)?[A-Za-z0-9.-]+(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/?$", var.broker_address)) || var.broker_address == ""
    error_message = "broker_address must be host, host:port, ws://host[:port] or wss://host[:port]."
  }
}

variable "function_id" {
  description = "DEBUGGER_FUNCTION_ID: pairs the function with `lambda-debugger attach FUNCTION_ID`."
  type        = string
  default     = "hello"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,128}$", var.function_id))
    error_message = "function_id must be 1-128 letters, digits, '.', '_' or '-'."
  }
}

variable "lambda_token_secret" {
  description = "Name or ARN of the Secrets Manager secret holding the broker's Lambda token (BROKER_LAMBDA_TOKEN); the broker stacks create STACK_NAME/lambda-token."
  type        = string
  default     = "lambda-debugger-broker/lambda-token"
}

variable "wait_max_ms" {
  description = "DEBUGGER_WAIT_MAX: how long each invocation waits for a debugger, in ms; 0 pairs only with a debugger already waiting."
  type        = number
  default     = 60000

  validation {
    condition     = var.wait_max_ms >= 0 && var.wait_max_ms <= 900000 && floor(var.wait_max_ms) == var.wait_max_ms
    error_message = "wait_max_ms must be a whole number of ms from 0 to 900000."
  }
}

variable "exec_wrapper" {
  description = "true sets AWS_LAMBDA_EXEC_WRAPPER=/opt/lambda-debugger-wrapper, for code without the `import lambda_debugger` line."
  type        = bool
  default     = false
}

variable "ca_file" {
  description = "DEBUGGER_CA_FILE: PEM bundle in the function's code or a layer (e.g. /var/task/ca.pem) for a wss:// broker with a private CA; empty trusts the system's CAs."
  type        = string
  default     = ""
}

variable "subnet_ids" {
  description = "Private subnets to run the function in; empty keeps it outside a VPC."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "With subnet_ids: the function's security groups, including the broker stacks' FunctionSecurityGroupId."
  type        = list(string)
  default     = []
}

variable "function_name" {
  description = "Name of the function (and prefix of its layer and role)."
  type        = string
  default     = "lambda-debugger-hello"
}

variable "handler" {
  description = "The function's handler, module.function."
  type        = string
  default     = "hello.handler"
}

variable "code_dir" {
  description = "Folder with the function's code; empty for examples/."
  type        = string
  default     = ""
}

variable "layer_zip" {
  description = "The layer zip; empty for dist/lambda-debugger-layer-python3.12-x86_64.zip."
  type        = string
  default     = ""
}
