"""The process protocol's wire format (docs/protocol.md): one message is

    uint32, little-endian    H, the length of the header in bytes
    H bytes                  the header: a JSON object (UTF-8) with "message" (its name) and
                             "arrays": [{"name": ..., "dtype": ..., "shape": [...]}, ...]
    the arrays' bytes        each array's raw bytes, C order, little-endian, in the header's
                             order, without padding: prod(shape) * itemsize bytes each

No text encoding of numbers on the hot path. Numpy only (no torch): both the harness
(process.py) and the Python client (client.py) use it.
"""
import json
import struct

import numpy as np

# the dtypes on the wire: the name in a header -> numpy's little-endian dtype
DTYPES = {"float64": np.dtype("<f8"), "float32": np.dtype("<f4"), "int64": np.dtype("<i8"), "bool": np.dtype("?")}
MAX_HEADER = 1 << 24  # 16 MiB: a longer header is garbage, not a message
MAX_ARRAY = 1 << 34  # 16 GiB: an array said to be larger is garbage too


class WireError(ValueError):
    """Bytes that are not a message (a bad length, header, dtype or shape): the text says which."""


def encode(message, arrays=(), **fields):
    """The bytes of one message: `arrays` is a list of (name, numpy array); `fields` join the header."""
    arrays = [(name, _wire_array(name, a)) for name, a in arrays]
    header = {"message": message, **fields,
              "arrays": [{"name": name, "dtype": _dtype_name(a.dtype), "shape": list(a.shape)} for name, a in arrays]}
    head = json.dumps(header, separators=(",", ":"), allow_nan=False, default=_jsonable).encode("utf-8")
    return b"".join([struct.pack("<I", len(head)), head] + [a.tobytes() for _, a in arrays])


def header_length(prefix):
    """H from the 4 bytes that start a message; WireError for a length over MAX_HEADER."""
    (length,) = struct.unpack("<I", prefix)
    if length > MAX_HEADER:
        raise WireError(f"a length prefix {bytes(prefix)!r} ({length} bytes, over {MAX_HEADER}): "
                        "not a message of this protocol")
    return length


def parse_header(raw):
    """The header's dict, its "arrays" checked: [(name, dtype, shape, nbytes)]; WireError otherwise."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"a header that is not JSON ({_short(raw)}: {e})") from None
    if not isinstance(header, dict) or not isinstance(header.get("message"), str):
        raise WireError(f"a header without a \"message\" name ({_short(raw)})")
    entries = header.get("arrays", [])
    if not isinstance(entries, list):
        raise WireError("\"arrays\" is not a list")
    specs, seen = [], set()
    for i, entry in enumerate(entries):
        specs.append(_array_spec(i, entry))
        if specs[-1][0] in seen:
            raise WireError(f"array {specs[-1][0]!r} given twice")
        seen.add(specs[-1][0])
    return header, specs


def arrays_from(specs, payload):
    """{name: array} read from the payload's bytes (copies: the buffer may be reused)."""
    out, at = {}, 0
    for name, dtype, shape, nbytes in specs:
        out[name] = np.frombuffer(payload, dtype=dtype, count=nbytes // dtype.itemsize, offset=at).reshape(shape).copy()
        at += nbytes
    return out


def read_message(stream):
    """(header, {name: array}) of the next message from a binary stream, or None at its end."""
    prefix = stream.read(4)
    if not prefix:
        return None
    if len(prefix) < 4:
        raise WireError("a message cut short in its length")
    raw = stream.read(header_length(prefix))
    header, specs = parse_header(raw)
    size = sum(s[3] for s in specs)
    payload = stream.read(size)
    if len(payload) < size:
        raise WireError("a message cut short in its arrays")
    return header, arrays_from(specs, payload)


def _array_spec(i, entry):
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise WireError(f"arrays[{i}] has no \"name\"")
    name, dtype, shape = entry["name"], entry.get("dtype"), entry.get("shape")
    if dtype not in DTYPES:
        raise WireError(f"array {name!r} has dtype {dtype!r}; expected one of {list(DTYPES)}")
    if (not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape)):
        raise WireError(f"array {name!r} has shape {shape!r}; expected a list of sizes >= 0")
    nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
    if nbytes > MAX_ARRAY:
        raise WireError(f"array {name!r} of shape {shape} would take {nbytes} bytes")
    return name, DTYPES[dtype], tuple(shape), nbytes


def _wire_array(name, a):
    a = np.asarray(a)
    name_of = _dtype_name(a.dtype, strict=False)
    if name_of is None:
        raise WireError(f"array {name!r} has dtype {a.dtype}; the protocol carries {list(DTYPES)}")
    return np.asarray(a, dtype=DTYPES[name_of], order="C")  # (ascontiguousarray makes a 0-d array 1-d)


def _dtype_name(dtype, strict=True):
    for name, d in DTYPES.items():
        if np.dtype(dtype) == d or np.dtype(dtype).newbyteorder("<") == d:
            return name
    if strict:
        raise WireError(f"dtype {dtype} is not carried")
    return None


def _jsonable(value):
    """Values json cannot write as they are: numpy scalars and tuples (descriptions hold a few)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def _short(raw):
    text = repr(bytes(raw[:40]))
    return text if len(raw) <= 40 else text[:-1] + "...'"
