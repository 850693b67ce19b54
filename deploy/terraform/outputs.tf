output "function_name" {
  description = "The function to invoke while debugging."
  value       = aws_lambda_function.hello.function_name
}

output "layer_version_arn" {
  description = "The lambda-debugger layer; attach it to other functions too."
  value       = aws_lambda_layer_version.debugger.arn
}

output "invoke_command" {
  description = "Invoke directly: API Gateway would give up after 29 s."
  value       = "aws lambda invoke --function-name ${aws_lambda_function.hello.function_name} --cli-binary-format raw-in-base64-out --payload '{\"name\": \"Lambda\"}' --cli-read-timeout 0 out.json"
}

output "attach_command" {
  description = "Run on your laptop, then attach VS Code to 127.0.0.1:5678."
  value       = "lambda-debugger attach ${var.function_id} --broker BROKER_DEVELOPER_ADDRESS --token-file ~/.lambda-debugger-token"
}
