"""The seed's recipe through the official openai client; run by tests/serve_openai.rs."""
import sys
import openai
from openai import OpenAI

base, key, model = sys.argv[1:4]
client = OpenAI(base_url=base, api_key=key, max_retries=0)

def finish(choice):
    return choice.finish_reason, getattr(choice, "stop_reason", None)

def streamed_completion(**kw):
    text, fin = "", None
    for chunk in client.completions.create(stream=True, **kw):
        for c in chunk.choices:
            text += c.text or ""
            if c.finish_reason:
                fin = finish(c)
    return text, fin

def streamed_chat(**kw):
    text, fin, usage = "", None, None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.finish_reason:
                fin = finish(c)
    return text, fin, usage

# The seed's recipe: answers end with a custom stop sequence, and the `stop` parameter halts the output there,
# before any repeat is seen. The replay extension makes the model write exactly such an answer.
recipe = " Berlin is the capital.######\nuser: And France?\nAI: Paris.######"
args = dict(model=model, prompt="user: What is the capital of Germany?\nAI:", stop="######",
            max_tokens=40, extra_body={"replay": recipe})
r = client.completions.create(**args)
assert r.choices[0].text == " Berlin is the capital.", r.choices[0].text
assert finish(r.choices[0]) == ("stop", "######"), finish(r.choices[0])
assert r.usage.completion_tokens > 0
assert streamed_completion(**args) == (" Berlin is the capital.", ("stop", "######"))

msgs = [{"role": "system", "content": "End every answer with ######."},
        {"role": "user", "content": "What is the capital of Germany?"}]
args = dict(model=model, messages=msgs, stop=["######", "\nuser:"], max_tokens=40,
            extra_body={"replay": "Berlin.######\nuser: more"})
r = client.chat.completions.create(**args)
assert r.choices[0].message.content == "Berlin.", r.choices[0].message.content
assert r.choices[0].message.role == "assistant"
assert finish(r.choices[0]) == ("stop", "######")
text, fin, usage = streamed_chat(stream_options={"include_usage": True}, **args)
assert (text, fin) == ("Berlin.", ("stop", "######")), (text, fin)
assert usage.total_tokens == r.usage.total_tokens, (usage, r.usage)

# The real model: the transcript trick halts at "\nuser:", streamed and not alike.
args = dict(model=model, prompt="user: What is the capital of France?\nAI:", stop="\nuser:",
            max_tokens=48, temperature=0)
r = client.completions.create(**args)
c = r.choices[0]
assert "\nuser:" not in c.text and c.finish_reason in ("stop", "length"), c
assert streamed_completion(**args) == (c.text, finish(c))

# The chat container: the model ends its turn with its own end token, no stop needed.
args = dict(model=model, messages=[{"role": "user", "content": "Say hello."}], temperature=0, max_tokens=80)
r = client.chat.completions.create(**args)
assert r.choices[0].finish_reason == "stop", r.choices[0]
assert streamed_chat(**args)[:2] == (r.choices[0].message.content, finish(r.choices[0]))

# n choices, echo and logprobs in the shapes the client parses.
r = client.completions.create(model=model, prompt="AI:", n=2, echo=True, max_tokens=8,
                              extra_body={"replay": " Hi."})
assert [c.index for c in r.choices] == [0, 1] and all(c.text == "AI: Hi." for c in r.choices), r
# The ledger: one entry per token the text carries, ids with return_token_ids; the replay's closing end
# token is carried last (its name is not text), the tokens of a cut stop are withheld; usage counts both.
r = client.completions.create(model=model, prompt="AI:", logprobs=2, max_tokens=8,
                              extra_body={"replay": " Hi.", "return_token_ids": True})
lp = r.choices[0].logprobs
ids, withheld = r.choices[0].model_extra["token_ids"], r.choices[0].model_extra["withheld_token_ids"]
assert lp.tokens[-1] == "<|im_end|>" and "".join(lp.tokens[:-1]) == " Hi.", lp
assert len(lp.token_logprobs) == len(ids) and withheld == [], (lp, ids, withheld)
assert len(ids) + len(withheld) == r.usage.completion_tokens, (ids, withheld, r.usage)
r = client.completions.create(model=model, prompt="AI:", logprobs=2, max_tokens=8, stop=["\nuser:"],
                              extra_body={"replay": " Hi.\nuser: x", "return_token_ids": True})
lp = r.choices[0].logprobs
ids, withheld = r.choices[0].model_extra["token_ids"], r.choices[0].model_extra["withheld_token_ids"]
assert "".join(lp.tokens) == " Hi." and len(lp.token_logprobs) == len(ids) and withheld, (lp, withheld)
assert len(ids) + len(withheld) == r.usage.completion_tokens, (ids, withheld, r.usage)
args = dict(model=model, messages=[{"role": "user", "content": "Say hello."}], temperature=0, max_tokens=8,
            logprobs=True, top_logprobs=3)
r = client.chat.completions.create(**args)
content = r.choices[0].logprobs.content
assert len(content) == r.usage.completion_tokens, (content, r.usage)
assert all(len(t.top_logprobs) == 3 for t in content), content
assert all(t.logprob <= 0 and bytes(t.bytes).decode("utf-8", "replace") == t.token for t in content), content
streamed = [t for chunk in client.chat.completions.create(stream=True, **args) for c in chunk.choices
            if c.logprobs and c.logprobs.content for t in c.logprobs.content]
assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]

# Errors come back as the client's own exceptions.
try:
    client.completions.create(model=model, prompt="Hi", suffix="!")
    raise AssertionError("suffix accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "suffix", e.body
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                   tools=[{"type": "function", "function": {"name": "f"}}])
    raise AssertionError("tools accepted by a template without a tools branch")
except openai.BadRequestError as e:
    assert e.body["param"] == "tools", e.body
try:
    client.completions.create(model="gpt-4", prompt="Hi")
    raise AssertionError("unknown model accepted")
except openai.NotFoundError:
    pass
try:
    OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
    raise AssertionError("wrong key accepted")
except openai.AuthenticationError:
    pass
assert [m.id for m in client.models.list()] == [model]
print("openai client: all checks passed")
