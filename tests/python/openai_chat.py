"""Drives Warden with the official OpenAI Python SDK, as an application would.

Usage: openai_chat.py BASE_URL API_KEY MODEL
Prints one JSON object: the chat answer and request id, a streamed answer, and the outcome
of a wrong key and an unknown model (the SDK raises its typed errors for Warden's OpenAI-shaped errors).
"""

import json
import sys

import openai

base_url, api_key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

raw = client.chat.completions.with_raw_response.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello to the audit trail"}],
    temperature=0,
    max_tokens=64,
)
completion = raw.parse()
result = {
    "request_id": raw.headers.get("x-request-id"),
    "content": completion.choices[0].message.content,
    "finish_reason": completion.choices[0].finish_reason,
    "model": completion.model,
    "prompt_tokens": completion.usage.prompt_tokens,
    "completion_tokens": completion.usage.completion_tokens,
}

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Stream it"}],
    stream=True,
    stream_options={"include_usage": True},
)
streamed = {"text": "", "finish_reason": None, "completion_tokens": None}
for chunk in stream:
    if chunk.choices:
        streamed["text"] += chunk.choices[0].delta.content or ""
        streamed["finish_reason"] = chunk.choices[0].finish_reason or streamed["finish_reason"]
    if chunk.usage:
        streamed["completion_tokens"] = chunk.usage.completion_tokens
result["stream"] = streamed

try:
    openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    result["wrong_key"] = "accepted"
except openai.AuthenticationError as err:
    result["wrong_key"] = {"status": err.status_code, "code": err.code}

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    result["unknown_model"] = "accepted"
except openai.NotFoundError as err:
    result["unknown_model"] = {"status": err.status_code, "code": err.code}

print(json.dumps(result))
