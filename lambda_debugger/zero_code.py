"""The zero-code entry point that deployed layers name in ``_HANDLER``
(``lambda_debugger.zero_code.handler``); the module itself lives in
:mod:`lambda_debugger.lambda_side.zero_code`."""

from lambda_debugger.lambda_side.zero_code import handler  # noqa: F401
