from ruvllm.judge import exact_match, grounding, token_f1


def test_reference_metrics() -> None:
    assert exact_match("The Answer.", "answer") == 1.0
    assert exact_match("an answer", "another") == 0.0
    assert token_f1("serialize obj to a JSON string", "Serialize obj to a JSON formatted str") > 0.6
    assert token_f1("nothing alike", "json dumps") == 0.0


def test_grounding_rewards_answers_drawn_from_context() -> None:
    ctx = ["Function json.dumps(obj). Serialize obj to a JSON formatted str."]
    assert grounding("json.dumps serializes obj to a JSON formatted str.", ctx) > 0.6
    assert grounding("It launches rockets to the moon.", ctx) < 0.3
    assert grounding("I don't know.", ctx) == 0.0
    assert grounding("", ctx) == 0.0
