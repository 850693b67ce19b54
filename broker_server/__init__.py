"""The broker: pairs a Lambda invocation with a debugger and relays bytes.

Both ends dial out to it: Lambdas on the Lambda-facing port (``/lambda/<id>``),
developers' attach bridges on the developer-facing port (``/debug/<id>``).

* :mod:`broker_server.config`: settings, built from the environment;
* :mod:`broker_server.registry`: the pairing logic, plain Python;
* :mod:`broker_server.handlers`: WebSocket handlers between network and registry;
* :mod:`broker_server.web`: health check, sessions API and web page;
* :mod:`broker_server.app`: the server, its two ports and ``main()``.

Tornado is imported by ``handlers``, ``web`` and ``app`` only.
"""
