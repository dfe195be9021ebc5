"""The reply schema, the reply parser and the response cache: no server needed."""
import json

import pytest

from sept.pipeline.llm import REPLY_JSON_SCHEMA, InvalidReply, NeighborReply, ResponseCache, cache_key, parse_reply, scrub

VALID = {"neighbors": [{"text": "barking dog", "kind": "acoustic"}, {"text": "puppy yelp", "kind": "subtype"}]}


def test_valid_reply_parses():
    reply = parse_reply(json.dumps(VALID), "stop")
    assert [n.text for n in reply.neighbors] == ["barking dog", "puppy yelp"]
    assert [n.kind for n in reply.neighbors] == ["acoustic", "subtype"]


def test_fenced_reply_is_accepted():
    raw = "```json\n" + json.dumps(VALID, indent=2) + "\n```"
    assert parse_reply(raw).neighbors[0].text == "barking dog"
    assert parse_reply("```\n" + json.dumps(VALID) + "```\n").neighbors[1].kind == "subtype"


@pytest.mark.parametrize("raw, finish, refusal, reason", [
    (json.dumps(VALID), "length", None, "truncated"),
    ('{"neighbors": [{"text": "bark', "length", None, "truncated"),
    ('{"neighbors": [{"text": "bark', "stop", None, "not_json"),
    ("Sure! Here are neighbors: barking", "stop", None, "not_json"),
    (json.dumps({"items": ["a"]}), "stop", None, "wrong_shape"),
    (json.dumps({"neighbors": [{"kind": "synonym"}]}), "stop", None, "wrong_shape"),
    (json.dumps({"neighbors": []}), "stop", None, "empty_list"),
    ("", "stop", None, "empty"),
    (None, "stop", "I can't help with that", "refusal"),
])
def test_invalid_replies_have_a_reason(raw, finish, refusal, reason):
    with pytest.raises(InvalidReply) as e:
        parse_reply(raw, finish, refusal)
    assert e.value.reason == reason


def test_unknown_kind_becomes_other_and_case_is_folded():
    reply = parse_reply(json.dumps({"neighbors": [{"text": "woof", "kind": "Onomatopoeia"},
                                                  {"text": "yap", "kind": "SYNONYM"}, {"text": "arf"}]}))
    assert [n.kind for n in reply.neighbors] == ["other", "synonym", "other"]


def test_strict_json_schema_matches_the_pydantic_model():
    # every property required and closed objects: what OpenAI strict mode demands
    item = REPLY_JSON_SCHEMA["properties"]["neighbors"]["items"]
    assert REPLY_JSON_SCHEMA["additionalProperties"] is False and item["additionalProperties"] is False
    assert set(item["required"]) == set(item["properties"]) == set(NeighborReply.model_fields["neighbors"]
                                                                    .annotation.__args__[0].model_fields)
    assert set(item["properties"]["kind"]["enum"]) == {"synonym", "paraphrase", "acoustic", "subtype", "other"}


def test_cache_roundtrip_and_damaged_entry(tmp_path):
    cache = ResponseCache(tmp_path / "c")
    key = cache_key({"model": "m", "class": "dog", "sample": 0})
    assert cache.get(key) is None
    path = cache.put(key, {"text": json.dumps(VALID)})
    assert cache.get(key)["text"] == json.dumps(VALID)
    assert not list(path.parent.glob("*.tmp")), "temporary file left behind"
    path.write_text("{truncated")
    assert cache.get(key) is None  # a damaged entry is a miss, not a crash
    assert (cache.hits, cache.misses) == (1, 2)


def test_cache_key_is_canonical():
    a = cache_key({"model": "m", "class": "cafe/restaurant", "sample": 0})
    b = cache_key({"sample": 0, "class": "cafe/restaurant", "model": "m"})
    assert a == b and len(a) == 64
    assert a != cache_key({"model": "m", "class": "cafe/restaurant", "sample": 1})


def test_scrub_removes_keys_from_text(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-verysecretvalue123")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "plain-secret-no-prefix")
    text = scrub("401: bad key sk-proj-verysecretvalue123 and plain-secret-no-prefix, sk-other-abcdefgh")
    assert "verysecret" not in text and "plain-secret" not in text and "sk-other" not in text
    assert text.count("***") == 3


def test_retry_after_forms():
    import email.utils
    import time

    from sept.pipeline.llm.backend import parse_retry_after

    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5", "retry-after-ms": "1500"}) == 1.5
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": date}) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
