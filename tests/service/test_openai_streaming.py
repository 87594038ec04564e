

def test_a_stop_string_never_shows_in_the_stream(server, alone):
    # A stop string from the middle of the unstopped answer: the stream must hold back its
    # first characters while they could still be the start of it.
    full = alone(GenItem(model="cand-b", prompt=user_turn(PROMPTS[2]), params=GenerationParams(max_new_tokens=40)))
    assert len(full.text) >= 8, full
    stop = full.text[4:8]
    expected = alone(GenItem(model="cand-b", prompt=user_turn(PROMPTS[2]), params=GenerationParams(max_new_tokens=40, stop=[stop])))
    assert expected.finish_reason == "stop" and stop not in expected.text
    stream = client_for(server).chat.completions.create(model="cand-b", messages=[{"role": "user", "content": PROMPTS[2]}],
                                                        temperature=0, max_tokens=40, stop=[stop], stream=True,
                                                        extra_body={"no_cache": True})
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == expected.text
