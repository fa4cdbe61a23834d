"""The policy chain as an OpenAI SDK application meets it.

Usage: openai_limits.py BASE_URL API_KEY LIMITED_MODEL FALLING_BACK_MODEL
Prints one JSON object: the rate-limit headers of admitted calls (plain and streamed), the
typed error the SDK raises once the request limit is reached (status, code, Retry-After), and
the answer of a call whose target is down and falls back to another.
"""

import json
import sys

import openai

base_url, api_key, limited, falling_back = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)


def headers_of(raw):
    return {
        name: raw.headers.get(name)
        for name in (
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
        )
    }


result = {"admitted": []}
fallback = client.chat.completions.create(
    model=falling_back,
    messages=[{"role": "user", "content": "Anyone there?"}],
    max_tokens=8,
)
result["fallback"] = {"content": fallback.choices[0].message.content, "id": fallback.id}

raw = client.chat.completions.with_raw_response.create(
    model=limited,
    messages=[{"role": "user", "content": "Say hello"}],
    max_tokens=8,
)
raw.parse()
result["admitted"].append(headers_of(raw))
with client.chat.completions.with_streaming_response.create(
    model=limited,
    messages=[{"role": "user", "content": "Stream it"}],
    max_tokens=8,
    stream=True,
) as streamed:
    result["admitted"].append(headers_of(streamed))
    for _ in streamed.iter_lines():
        pass

try:
    for _ in range(10):
        client.chat.completions.create(
            model=limited,
            messages=[{"role": "user", "content": "Again"}],
            max_tokens=8,
        )
    result["refused"] = None
except openai.RateLimitError as error:
    result["refused"] = {
        "status": error.status_code,
        "code": error.code,
        "type": error.type,
        "retry_after": error.response.headers.get("retry-after"),
        "remaining": error.response.headers.get("x-ratelimit-remaining-requests"),
    }

print(json.dumps(result))
