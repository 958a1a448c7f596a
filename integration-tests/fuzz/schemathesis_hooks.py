"""Schemathesis checks of our own, loaded through SCHEMATHESIS_HOOKS (see schemathesis.sh).

The project's rule is that bad input always gets a clear error naming the field and the
reason: every 4xx body must be an ErrorResponse whose `error.field` points into the request
that was sent (or names the body, a header, the path or the method) and whose `error.reason`
says what is wrong.
"""

import json
import re

import schemathesis

# Fields that name a part of the HTTP request rather than a path inside the JSON body.
REQUEST_PARTS = {"body", "content-type", "path", "method", "request"}

_SEGMENT = re.compile(r"\[(\d*)\]|([^.\[\]]+)")


@schemathesis.check
def error_names_the_field(ctx, response, case):
    """Every 4xx answer is {"error": {"field", "reason"}} with a field the request has."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = json.loads(response.content)
        field = body["error"]["field"]
        reason = body["error"]["reason"]
    except (ValueError, KeyError, TypeError) as e:
        raise AssertionError(f"a {response.status_code} body is not an ErrorResponse ({e}): {response.content[:300]!r}")
    if not isinstance(field, str) or not field.strip():
        raise AssertionError(f"a {response.status_code} error names no field: {body}")
    if not isinstance(reason, str) or len(reason.strip()) < 5:
        raise AssertionError(f"a {response.status_code} error gives no reason: {body}")
    if field in REQUEST_PARTS or response.status_code != 422:
        return None
    problem = _path_problem(field, case.body)
    if problem:
        raise AssertionError(f"422 names field {field!r}, which {problem}: {body}")
    return None


def _path_problem(field, document):
    """Why `field` does not point into `document`, or None when it does.

    The path may stop resolving at a key the request lacks (`criteria.rewards` when no
    rewards were sent names the missing field); an index out of range, or a key or index
    applied to a value that is not an object or array, does not point anywhere.
    `versions[].weight` names a field of every element.
    """
    node = document
    for index, key in _SEGMENT.findall(field):
        if key:
            if not isinstance(node, dict):
                return f"steps into {type(node).__name__} with key {key!r}"
            if key not in node:
                return None
            node = node[key]
        else:
            if not isinstance(node, list):
                return f"indexes a {type(node).__name__}"
            if index == "":
                if not node:
                    return None
                node = node[0]
                continue
            if int(index) >= len(node):
                return f"indexes past the end ({index} of {len(node)})"
            node = node[int(index)]
    return None
