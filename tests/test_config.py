import pytest

from lambda_debugger.lambda_side.config import ConfigError, LambdaConfig, wait_budget_ms

pytestmark = pytest.mark.timeout(10)

BASE = {"DEBUGGER_BROKER_ADDRESS": "broker.internal", "DEBUGGER_FUNCTION_ID": "orders"}


def test_defaults():
    config = LambdaConfig.from_environ(BASE)
    assert config.broker_url == "ws://broker.internal:8080/lambda/orders"
    assert config.wait_max_ms == 60000
    assert config.auth_token is None
    assert config.log_level == "info"


def test_all_values():
    config = LambdaConfig.from_environ(
        dict(
            BASE,
            DEBUGGER_BROKER_ADDRESS="wss://b:443",
            DEBUGGER_AUTH_TOKEN=" s3cret ",
            DEBUGGER_WAIT_MAX="1500",
            DEBUGGER_LOG_LEVEL="DEBUG",
        )
    )
    assert config.broker_url == "wss://b:443/lambda/orders"
    assert (config.auth_token, config.wait_max_ms, config.log_level) == ("s3cret", 1500, "debug")


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"DEBUGGER_BROKER_ADDRESS": ""}, "DEBUGGER_BROKER_ADDRESS is not set"),
        ({"DEBUGGER_BROKER_ADDRESS": "h:notaport"}, "DEBUGGER_BROKER_ADDRESS"),
        ({"DEBUGGER_FUNCTION_ID": ""}, "DEBUGGER_FUNCTION_ID is not set"),
        ({"DEBUGGER_FUNCTION_ID": "bad id"}, "must match"),
        ({"DEBUGGER_WAIT_MAX": "soon"}, "whole number"),
        ({"DEBUGGER_WAIT_MAX": "-5"}, "whole number"),
        ({"DEBUGGER_LOG_LEVEL": "loud"}, "DEBUGGER_LOG_LEVEL"),
    ],
)
def test_bad_values_give_clear_errors(change, needle):
    with pytest.raises(ConfigError, match=needle):
        LambdaConfig.from_environ(dict(BASE, **change))


def test_bad_token_value_never_appears_in_errors():
    with pytest.raises(ConfigError) as info:
        LambdaConfig.from_environ(dict(BASE, DEBUGGER_AUTH_TOKEN="tok-123", DEBUGGER_WAIT_MAX="x"))
    assert "tok-123" not in str(info.value)


@pytest.mark.parametrize(
    "wait_max, remaining, expected",
    [
        (60000, 900000, 60000),  # plenty of time: the configured maximum
        (60000, 30000, 27000),  # keeps 10 % of 30 s
        (60000, 5000, 4000),  # keeps 1 s (more than 10 %)
        (60000, 1000, 0),  # nothing to spare
        (60000, 500, 0),
        (0, 900000, 0),
    ],
)
def test_wait_budget_leaves_the_handler_its_share(wait_max, remaining, expected):
    assert wait_budget_ms(wait_max, remaining) == expected


def test_the_token_stays_out_of_reprs():
    config = LambdaConfig.from_environ(dict(BASE, DEBUGGER_AUTH_TOKEN="tok-987"))
    assert config.auth_token == "tok-987"
    assert "tok-987" not in repr(config) and "tok-987" not in str(config)
