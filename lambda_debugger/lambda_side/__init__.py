"""What runs inside AWS Lambda, and all that the layer ships besides
:mod:`lambda_debugger.wire`: the import hook and zero-code mode that put the
proxy in front of the handler, the proxy's debug session for one
invocation, and the forked child that runs the handler under debugpy."""
