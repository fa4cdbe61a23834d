"""Drives every OpenAI endpoint Warden serves with the official OpenAI Python SDK, once per
target kind, as an application would.

Usage: openai_all_kinds.py BASE_URL API_KEY CHAT_MODEL [CHAT_MODEL ...] --embed EMBED_MODEL
Prints one JSON object keyed by model: chat, streamed chat, completion, streamed completion,
and the typed errors the SDK raises for Warden's 400s; plus the embeddings of EMBED_MODEL.
"""

import json
import sys

import openai

args = sys.argv[1:]
embed_model = args[args.index("--embed") + 1]
base_url, api_key, *models = args[: args.index("--embed")]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)


def error_of(call):
    try:
        call()
        return "accepted"
    except openai.APIStatusError as err:
        return {"status": err.status_code, "code": err.code}


result = {}
for model in models:
    outcome = {}
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        temperature=0,
        top_p=1,
        max_tokens=5,
    )
    outcome["chat"] = {
        "content": chat.choices[0].message.content,
        "finish_reason": chat.choices[0].finish_reason,
        "completion_tokens": chat.usage.completion_tokens,
        "model": chat.model,
    }
    text, finish, usage = "", None, None
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    outcome["chat_stream"] = {"text": text, "finish_reason": finish, "completion_tokens": usage}

    completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=3)
    outcome["completion"] = {
        "text": completion.choices[0].text,
        "finish_reason": completion.choices[0].finish_reason,
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
    }
    text = "".join(
        chunk.choices[0].text
        for chunk in client.completions.create(model=model, prompt="Once", stream=True)
        if chunk.choices
    )
    outcome["completion_stream"] = {"text": text}
    outcome["too_many_stops"] = error_of(
        lambda: client.completions.create(model=model, prompt="x", stop=["a", "b", "c", "d", "e"])
    )
    result[model] = outcome

embeddings = client.embeddings.create(model=embed_model, input=["first text", "second text"])
result["embeddings"] = {
    "count": len(embeddings.data),
    "dimensions": len(embeddings.data[0].embedding),
    "model": embeddings.model,
}
result["embeddings_on_tgi"] = error_of(lambda: client.embeddings.create(model=models[0], input="x"))
print(json.dumps(result))
