"""Drives Warden's blocking guardrails with the official OpenAI Python SDK.

Usage: openai_guard_blocks.py BASE_URL API_KEY MODEL ATTACK QUESTION
Sends ATTACK (a prompt injection) in a chat call, then QUESTION whole and streamed (the
upstream's answer to it is one the content filter blocks), and prints one JSON object: what
the SDK raised or received for each.
"""

import json
import sys

import openai

base_url, api_key, model, attack, question = sys.argv[1:6]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
result = {}


def error_of(err):
    body = err.body if isinstance(err.body, dict) else {}
    # The SDK hands over the `error` object itself for HTTP errors.
    inner = body.get("error", body)
    return {"status": getattr(err, "status_code", None), "code": inner.get("code"),
            "type": inner.get("type"), "message": inner.get("message")}


try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": attack}])
    result["attack"] = {"status": 200}
except openai.APIStatusError as err:
    result["attack"] = error_of(err)

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
    result["whole"] = {"status": 200}
except openai.APIStatusError as err:
    result["whole"] = error_of(err)

streamed = {"text": "", "error": None}
try:
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True
    )
    for chunk in stream:
        if chunk.choices:
            streamed["text"] += chunk.choices[0].delta.content or ""
except openai.APIError as err:
    streamed["error"] = {"message": err.message, "code": getattr(err, "code", None)}
result["stream"] = streamed
print(json.dumps(result))
