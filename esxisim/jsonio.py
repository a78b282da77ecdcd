"""JSON for what every tool call reads and logs (host.json, faults.json, the process and guest
logs), without importing the json package.

`import json` compiles the decoder's and the encoder's regular expressions, loading re and
enum with them: about a fifth of the CPU of a vim-cmd call, paid tens of thousands of times
per test run. The C accelerator that json itself parses and quotes with (_json) does the work
here, so the text read and written is json's to the byte; whatever it does not take whole
(text that is no JSON document, types the state files do not hold) goes to json itself, for
json's own result or error.
"""
import _json

_SPACE = " \t\n\r"  # what json skips around a document


class _Settings:
    """What _json's scanner reads off the json.JSONDecoder() that json.loads makes."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_scan = _json.make_scanner(_Settings())
_quote = _json.encode_basestring_ascii


def loads(text):
    """json.loads(text) for a str."""
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        obj, end = _scan(text, start)
    except (StopIteration, ValueError):
        end = None
    if end is None or text[end:].strip(_SPACE):
        import json
        return json.loads(text)  # json's own error
    return obj


class _Other(Exception):
    """A value _dump leaves to json."""


def _dump(o, sort_keys):
    if isinstance(o, str):
        return _quote(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if type(o) is int:
        return int.__repr__(o)
    if type(o) is float:
        if o != o:
            return "NaN"
        if o in (float("inf"), float("-inf")):
            return "Infinity" if o > 0 else "-Infinity"
        return float.__repr__(o)
    if isinstance(o, (list, tuple)):
        return "[" + ", ".join([_dump(v, sort_keys) for v in o]) + "]"
    if isinstance(o, dict) and all(isinstance(k, str) for k in o):
        items = sorted(o.items()) if sort_keys else o.items()
        return "{" + ", ".join([_quote(k) + ": " + _dump(v, sort_keys) for k, v in items]) + "}"
    raise _Other


def dumps(obj, sort_keys=False):
    """json.dumps(obj, sort_keys=sort_keys) with json's other defaults."""
    try:
        return _dump(obj, sort_keys)
    except (_Other, RecursionError):  # RecursionError: json names a circular reference
        import json
        return json.dumps(obj, sort_keys=sort_keys)
