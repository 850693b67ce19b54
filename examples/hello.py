"""An example Lambda handler, ready to debug.

Run it locally:  lambda-debugger local examples/hello.handler --event examples/event.json
"""

import json
import logging
import os

logger = logging.getLogger()
GREETING = os.environ.get("GREETING", "Hello")


def handler(event, context):
    name = event.get("name", "world")
    message = "%s, %s!" % (GREETING, name)  # a good first breakpoint
    logger.info("greeting %s", name)
    return {
        "statusCode": 200,
        "body": json.dumps({"message": message, "request_id": context.aws_request_id}),
    }


import lambda_debugger  # noqa: E402,F401  (last line: swaps the handler when DEBUGGER_ACTIVE is on)
