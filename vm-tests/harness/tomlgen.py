"""dict -> TOML, the inverse of the standard library's tomllib for plain data.

Supports what a config file needs: strings, integers, floats, booleans,
lists of scalars, nested tables and arrays of tables.  Keys are written
bare when they can be and quoted otherwise.  `merge()` deep-merges
overrides into a base dict (tables merge, everything else replaces), which
is how a story extends a role's default config.
"""

import json
import math
import re

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k):
    if not isinstance(k, str):
        raise TypeError(f"TOML keys must be strings, got {k!r}")
    return k if _BARE.match(k) else json.dumps(k)


def _value(v, path):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x, path) for x in v) + "]"
    if isinstance(v, dict):  # inline table (only inside arrays of scalars/mixed)
        return "{ " + ", ".join(f"{_key(k)} = {_value(x, path)}" for k, x in v.items()) + " }"
    if v is None:
        raise TypeError(f"TOML has no null (at {'.'.join(path) or 'top level'})")
    raise TypeError(f"cannot write {type(v).__name__} as TOML (at {'.'.join(path)})")


def _is_table_array(v):
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, dict) for x in v)


def _emit(table, path, out):
    scalars = [(k, v) for k, v in table.items()
               if not isinstance(v, dict) and not _is_table_array(v)]
    for k, v in scalars:
        if v is None:
            continue  # None means "leave unset": lets overrides delete a key
        out.append(f"{_key(k)} = {_value(v, path + [k])}")
    for k, v in table.items():
        if isinstance(v, dict):
            sub = path + [k]
            if out:
                out.append("")
            out.append("[" + ".".join(_key(p) for p in sub) + "]")
            _emit(v, sub, out)
        elif _is_table_array(v):
            sub = path + [k]
            for item in v:
                if out:
                    out.append("")
                out.append("[[" + ".".join(_key(p) for p in sub) + "]]")
                _emit(item, sub, out)


def dumps(data):
    """Render a dict as a TOML document."""
    if not isinstance(data, dict):
        raise TypeError("a TOML document is a table (dict)")
    out = []
    _emit(data, [], out)
    return "\n".join(out) + "\n"


def merge(base, overrides):
    """Deep-merge `overrides` into a copy of `base`; None values delete keys."""
    result = dict(base)
    for k, v in overrides.items():
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict) and isinstance(result.get(k), dict):
            result[k] = merge(result[k], v)
        else:
            result[k] = v
    return result
