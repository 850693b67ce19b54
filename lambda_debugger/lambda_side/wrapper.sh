#!/bin/sh
# lambda-debugger's exec wrapper, shipped at the root of the layer:
#   AWS_LAMBDA_EXEC_WRAPPER=/opt/lambda-debugger-wrapper
# Lambda runs it with the runtime's start command as arguments. With
# DEBUGGER_ACTIVE on, it keeps the function's handler in
# LAMBDA_DEBUGGER_HANDLER and points the runtime at lambda_debugger.zero_code,
# which loads that handler and debugs it; otherwise it changes nothing.

case "$(printf '%s' "${DEBUGGER_ACTIVE:-}" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')" in
    "" | 0 | false) exec "$@" ;;
esac
if [ -z "${_HANDLER:-}" ] || [ "$_HANDLER" = "lambda_debugger.zero_code.handler" ]; then
    exec "$@"
fi

export LAMBDA_DEBUGGER_HANDLER="$_HANDLER"
export _HANDLER="lambda_debugger.zero_code.handler"

# Managed runtimes read _HANDLER; a runtime client started directly
# (python -m awslambdaric HANDLER) takes it from its arguments.
for arg do
    shift
    if [ "$arg" = "$LAMBDA_DEBUGGER_HANDLER" ]; then
        set -- "$@" "$_HANDLER"
    else
        set -- "$@" "$arg"
    fi
done
exec "$@"
