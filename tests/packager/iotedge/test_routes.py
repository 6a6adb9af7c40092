"""The IoT Edge route language: sources, sinks, and the routing query language of WHERE clauses."""

from __future__ import annotations

import pytest

from packager.iotedge.routes import UNDEFINED, RouteError, Sink, Source, parse_condition, parse_route, parse_routes

JSON = {"contentType": "application/json", "contentEncoding": "utf-8"}


@pytest.mark.parametrize(
    ("text", "source", "sink"),
    [
        ("FROM /* INTO $upstream", Source("all"), Sink("upstream")),
        ("from /messages/* into $upstream", Source("messages"), Sink("upstream")),
        ("SELECT * FROM /messages/modules/* INTO $upstream", Source("modules"), Sink("upstream")),
        ("FROM /messages/modules/gen/* INTO $upstream", Source("module", "gen"), Sink("upstream")),
        ("FROM /messages/modules/gen/outputs/* INTO $upstream", Source("module", "gen"), Sink("upstream")),
        ("FROM /messages/modules/gen/outputs/out1 INTO $upstream", Source("module", "gen", "out1"), Sink("upstream")),
        ("FROM /twinChangeNotifications INTO $upstream", Source("twinChangeNotifications"), Sink("upstream")),
        (
            'FROM /messages/modules/gen/outputs/out INTO BrokeredEndpoint("/modules/scorer/inputs/in1")',
            Source("module", "gen", "out"),
            Sink("module", "scorer", "in1"),
        ),
        (
            "  FROM /* INTO brokeredendpoint('/modules/a.b-c/inputs/x_1')  ",
            Source("all"),
            Sink("module", "a.b-c", "x_1"),
        ),
    ],
)
def test_sources_and_sinks(text, source, sink):
    route = parse_route(text)
    assert route.source == source
    assert route.sink == sink
    assert route.condition is None


@pytest.mark.parametrize(
    ("source", "module", "output", "twin", "expected"),
    [
        ("/*", "gen", "out", False, True),
        ("/*", None, None, False, True),
        ("/*", None, None, True, True),
        ("/messages/*", None, None, False, True),
        ("/messages/*", None, None, True, False),
        ("/messages/modules/*", "gen", "out", False, True),
        ("/messages/modules/*", None, None, False, False),
        ("/messages/modules/gen/*", "gen", "x", False, True),
        ("/messages/modules/gen/*", "gen2", "x", False, False),
        ("/messages/modules/gen/outputs/*", "gen", None, False, True),
        ("/messages/modules/gen/outputs/out", "gen", "out", False, True),
        ("/messages/modules/gen/outputs/out", "gen", "other", False, False),
        ("/twinChangeNotifications", "gen", "out", False, False),
        ("/twinChangeNotifications", None, None, True, True),
    ],
)
def test_matches_source(source, module, output, twin, expected):
    route = parse_route(f"FROM {source} INTO $upstream")
    assert route.matches_source(module, output, twin_change=twin) is expected


def test_accepts_source_and_condition():
    route = parse_route(
        'FROM /messages/modules/gen/outputs/out WHERE $body.t > 20 INTO BrokeredEndpoint("/modules/s/inputs/in")'
    )
    assert route.accepts("gen", "out", {}, JSON, b'{"t": 25}')
    assert not route.accepts("gen", "out", {}, JSON, b'{"t": 5}')
    assert not route.accepts("other", "out", {}, JSON, b'{"t": 25}')
    assert route.modules() == {"gen", "s"}
    assert route.condition is not None and route.condition.text == "$body.t > 20"


APP = {"kind": "alert", "level": "5", "Mixed": "Case", "$messageId": "app-wins", "empty": ""}
SYS = {**JSON, "connectionModuleId": "gen", "iothub-connection-device-id": "dev1", "messageId": "m1"}
BODY = b'{"t": 25.5, "name": "probe-7", "ok": true, "none": null, "tags": ["a", "b"], "nested": {"x": {"y": 3}}}'


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # literals and comparisons
        ("1 = 1", True),
        ("1 <> 2", True),
        ("1 != 1", False),
        ("2 > 1 AND 1 < 2 AND 2 >= 2 AND 2 <= 2", True),
        ("'a' < 'b'", True),
        ("\"it\\'s\" = 'it\\'s'", True),
        ("'\\u0041' = 'A'", True),
        ("0x1F = 31", True),
        ("1.5e1 = 15", True),
        ("true = true", True),
        ("true < false", False),  # undefined for bools
        ("null = null", True),
        ("kind = null", False),
        ("1 = '1'", False),  # mixed types: undefined
        # application properties (strings, case-insensitive lookup)
        ("kind = 'alert'", True),
        ("KIND = 'alert'", True),
        ("mixed = 'Case'", True),
        ("level > 3", False),  # a string property is not a number
        ("AS_NUMBER(level) > 3", True),
        ("missing = 'x'", False),
        ("NOT missing = 'x'", False),  # NOT undefined is undefined
        # system properties
        ("$connectionModuleId = 'gen'", True),
        ("$connectionDeviceId = 'dev1'", True),
        ("$contentType = 'application/json'", True),
        ("$messageId = 'app-wins'", True),  # an application property named $messageId wins
        ("IS_DEFINED($correlationId)", False),
        # $body
        ("$body.t > 25", True),
        ("$body.t = 25.5", True),
        ("$body.name = 'probe-7'", True),
        ("$body.ok = true", True),
        ("IS_NULL($body.none)", True),
        ("$body.tags[1] = 'b'", True),
        ("IS_ARRAY($body.tags) AND IS_OBJECT($body.nested)", True),
        ("$body.nested.x.y = 3", True),
        ("IS_DEFINED($body.nested.x.z)", False),
        ("$body.tags[5] = 'b'", False),
        # precedence
        ("1 = 1 OR 1 = 2 AND 1 = 2", True),
        ("(1 = 1 OR 1 = 2) AND 1 = 2", False),
        ("NOT 1 = 2", True),
        ("NOT 1 = 1 OR 1 = 1", True),
        ("NOT (1 = 1 OR 1 = 1)", False),
        ("1 + 2 * 3 = 7", True),
        ("(1 + 2) * 3 = 9", True),
        ("10 - 4 - 3 = 3", True),
        ("-2 * -3 = 6", True),
        ("7 % 4 = 3", True),
        ("1 / 0 = 1", False),
        ("'a' || 'b' = 'ab'", True),
        ("(missing ?? 'dflt') = 'dflt'", True),
        ("(kind ?? 'dflt') = 'alert'", True),
        ("kind ?? 1 = 2", False),
        ("1 = 1 and 2 = 2 or 1 = 2", True),
        # three-valued logic
        ("missing = 1 OR 1 = 1", True),
        ("missing = 1 AND 1 = 1", False),
        ("missing = 1 AND 1 = 2", False),
        ("NOT (missing = 1 AND 1 = 2)", True),
        # functions
        ("IS_DEFINED(kind)", True),
        ("IS_DEFINED(nope)", False),
        ("IS_STRING(kind) AND NOT IS_NUMBER(kind)", True),
        ("IS_NUMBER($body.t) AND IS_BOOL($body.ok)", True),
        ("IS_PRIMITIVE($body.t) AND NOT IS_PRIMITIVE($body.tags)", True),
        ("STARTS_WITH($body.name, 'probe')", True),
        ("ends_with($body.name, '-7')", True),
        ("CONTAINS(kind, 'ler')", True),
        ("CONTAINS(kind, 'xyz')", False),
        ("CONTAINS(1, 'x')", False),
        ("LENGTH(kind) = 5", True),
        ("LENGTH(empty) = 0", True),
        ("LOWER('AbC') = 'abc' AND UPPER('AbC') = 'ABC'", True),
        ("CONCAT('a', 'b', 'c') = 'abc'", True),
        ("SUBSTRING('hello', 1, 3) = 'ell'", True),
        ("SUBSTRING('hello', 3) = 'lo'", True),
        ("INDEX_OF('hello', 'l') = 2", True),
        ("ABS(-3) = 3 AND CEILING(1.2) = 2 AND FLOOR(1.8) = 1 AND SIGN(-4) = -1", True),
        ("SQRT(9) = 3 AND SQUARE(3) = 9 AND POWER(2, 10) = 1024 AND EXP(0) = 1", True),
        ("SQRT(-1) = 1", False),
        ("AS_NUMBER('x') = 1", False),
        ("/* a comment */ 1 = 1", True),
    ],
)
def test_condition_table(condition, expected):
    assert parse_condition(condition).evaluate(APP, SYS, BODY) is expected


@pytest.mark.parametrize(
    ("system", "body", "expected"),
    [
        (JSON, b'{"t": 30}', True),
        (JSON, '{"t": 30}', True),
        (JSON, {"t": 30}, True),
        ({"contentType": "Application/JSON", "contentEncoding": "UTF-8"}, b'{"t": 30}', True),
        ({"content-type": "application/json", "content-encoding": "utf-8"}, b'{"t": 30}', True),
        ({"$.ct": "application/json", "$.ce": "utf-8"}, b'{"t": 30}', True),
        ({"contentType": "application/json", "contentEncoding": "utf-16"}, '{"t": 30}'.encode("utf-16"), True),
        ({"contentType": "text/plain", "contentEncoding": "utf-8"}, b'{"t": 30}', False),
        ({"contentType": "application/json"}, b'{"t": 30}', False),  # no encoding: no body queries
        ({}, b'{"t": 30}', False),
        (JSON, b"not json", False),
        (JSON, b"\xff\xfe", False),
        (JSON, None, False),
    ],
)
def test_body_needs_json_content(system, body, expected):
    assert parse_condition("$body.t > 20").evaluate({}, system, body) is expected


def test_body_is_read_only_when_needed():
    cond = parse_condition("kind = 'x' OR $body.a = 1 OR $body.b = 2")
    assert cond.evaluate({"kind": "x"}, JSON, b"{") is True  # short-circuit: the broken body is never read
    assert cond.evaluate({}, JSON, b'{"b": 2}') is True
    assert cond.evaluate({}, {}, b'{"b": 2}') is False


def test_value_exposes_undefined():
    assert parse_condition("missing").value({}, {}) is UNDEFINED
    assert parse_condition("LENGTH('abc')").value({}, {}) == 3.0


@pytest.mark.parametrize(
    ("route", "position", "expected"),
    [
        ("", 0, "FROM"),
        ("TO /* INTO $upstream", 0, "FROM"),
        ("SELECT FROM /* INTO $upstream", 7, "'*' after SELECT"),
        ("FROM /messages INTO $upstream", 5, "a source"),
        ("FROM /messages/modules/a/inputs/x INTO $upstream", 5, "a source"),
        ("FROM", 4, "a source"),
        ("FROM /*", 7, "WHERE or INTO"),
        ("FROM /* $upstream", 8, "WHERE or INTO"),
        ("FROM /* WHERE INTO $upstream", 14, "a condition after WHERE"),
        ("FROM /* WHERE a = INTO $upstream", 18, "an operand"),
        ("FROM /* WHERE a = 1 b = 2 INTO $upstream", 20, "an operator"),
        ("FROM /* WHERE (a = 1 INTO $upstream", 21, "')'"),
        ("FROM /* WHERE a = 'x INTO $upstream", 18, "a closing '"),
        ("FROM /* WHERE a = 'x\\q' INTO $upstream", 20, "an escape"),
        ("FROM /* WHERE a # 1 INTO $upstream", 16, "an operand or an operator"),
        ("FROM /* WHERE nope(a) INTO $upstream", 14, "a known function"),
        ("FROM /* WHERE LENGTH(a, b) INTO $upstream", 14, "1 argument(s) for LENGTH"),
        ("FROM /* WHERE CONTAINS(a) INTO $upstream", 14, "2 argument(s) for CONTAINS"),
        ("FROM /* WHERE LENGTH(a INTO $upstream", 23, "',' or ')'"),
        ("FROM /* WHERE $body.a..b = 1 INTO $upstream", 21, "in a $body path"),
        ("FROM /* WHERE $foo[0] = 1 INTO $upstream", 14, "a system property"),
        ("FROM /* INTO", 12, "a sink"),
        ("FROM /* INTO $downstream", 13, "$upstream or BrokeredEndpoint"),
        ("FROM /* INTO BrokeredEndpoint(/modules/a/inputs/b)", 30, "a quoted endpoint"),
        ('FROM /* INTO BrokeredEndpoint("/modules/a/outputs/b")', 30, "an endpoint"),
        ('FROM /* INTO BrokeredEndpoint("/modules/a/inputs/b"', 51, "')'"),
        ("FROM /* INTO $upstream WHERE a = 1", 23, "the end of the route"),
        ("FROM /* WHERE AND INTO $upstream", 14, "an operand"),
    ],
)
def test_parse_errors_name_position_and_expectation(route, position, expected):
    with pytest.raises(RouteError) as info:
        parse_route(route)
    assert info.value.position == position, str(info.value)
    assert expected in info.value.expected
    assert f"at character {position + 1}" in str(info.value)


def test_condition_errors():
    with pytest.raises(RouteError, match="a condition"):
        parse_condition("  ")
    with pytest.raises(RouteError, match="end of the condition"):
        parse_condition("a = 1)")


def test_not_a_string():
    with pytest.raises(RouteError, match="a route string"):
        parse_route(None)  # type: ignore[arg-type]


def test_compiled_once_evaluation_is_fast():
    import time

    route = parse_route(
        "FROM /messages/modules/gen/outputs/out WHERE $connectionModuleId = 'gen' AND "
        "(kind = 'alert' OR AS_NUMBER(level) >= 3) AND STARTS_WITH($body.name, 'probe') INTO $upstream"
    )
    cond = route.condition
    assert cond is not None
    start = time.perf_counter()
    for _ in range(10_000):
        assert cond.evaluate(APP, SYS, BODY)
    per_message = (time.perf_counter() - start) / 10_000
    assert per_message < 200e-6, per_message


def test_parse_routes_of_edge_hub():
    routes = parse_routes(
        {
            "a": "FROM /* INTO $upstream",
            "b": {"route": "FROM /messages/* WHERE x = 1 INTO $upstream", "priority": 2, "timeToLiveSecs": 60},
        }
    )
    assert (routes["a"].priority, routes["a"].time_to_live_secs) == (0, None)
    assert (routes["b"].priority, routes["b"].time_to_live_secs) == (2, 60)
    with pytest.raises(RouteError, match="route 'bad': at character 1: expected FROM") as info:
        parse_routes({"ok": "FROM /* INTO $upstream", "bad": "INTO $upstream"})
    assert info.value.name == "bad"
    with pytest.raises(RouteError, match="priority 0 to 9"):
        parse_routes({"p": {"route": "FROM /* INTO $upstream", "priority": 10}})
    with pytest.raises(RouteError, match="timeToLiveSecs"):
        parse_routes({"p": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": -1}})
