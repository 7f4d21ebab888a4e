"""Text models (TF-IDF n-grams into a linear model) scored by sqlml's C scorer
(sqlml/native/tfidf.c) straight from DuckDB's Arrow strings.

Why: onnxruntime runs such a model as five string kernels, and feeding it means turning every
Arrow string into a Python object first; together that is most of a text model's time. The C
scorer reads the Arrow buffers, tokenizes, looks the n-grams up in hash tables and sums the
weights a row touches, with the GIL released.

Which graphs: what skl2onnx emits for a `TfidfVectorizer` (or `CountVectorizer`) into a
linear model: [Reshape] -> [StringNormalizer] -> Tokenizer (a `[class]+` token expression) ->
[Flatten] -> TfIdfVectorizer (no skips) -> [Mul by constants] -> [Normalizer] ->
LinearClassifier | LinearRegressor -> [any steps on its outputs]. Anything else (sublinear
TF's Log, binary counts' Casts, character n-grams, a model other than a linear node) stays on
onnxruntime.

How it stays exact: the C scorer returns the raw linear scores; a tail model (the graph's own
linear node with identity coefficients, then the steps after it) adds the intercepts, the
post-transform and the rest in onnxruntime, so labels and probabilities follow onnxruntime's
code; the sums before it run in another order than onnxruntime's, ~1e-7 apart. Rows with
non-ASCII bytes go to onnxruntime whole. When the model loads, the scorer is checked against
onnxruntime on probe texts built from the vocabulary; any difference and onnxruntime scores
the model.
"""

from __future__ import annotations

import ctypes
import functools
import re
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa

from sqlml.runtimes.parts import (
    ML_DOMAIN,
    CannotSplit,
    load_native,
    model_like,
    same_outputs,
    single_thread_session,
)

ABI = 2  # sqlml_tfidf_abi() of the C file this module was written for
MAX_GRAM = 8  # tfidf.c: the longest n-gram
EMPTY = -1
MODES = {"TF": 0, "IDF": 1, "TFIDF": 2}
NORMS = {"NONE": 0, "L1": 1, "L2": 2, "MAX": 3}
LINEAR_OPS = ("LinearClassifier", "LinearRegressor")
PASS_THROUGH = ("Reshape", "Flatten", "Identity")  # shape-only steps on the string path
_CLASS = re.compile(r"\[((?:[^\]\\]|\\.)+)\]\+")


class _Model(ctypes.Structure):
    """sqlml_tfidf_model in tfidf.c, field for field."""

    _fields_ = [
        ("case_map", ctypes.c_void_p),
        ("token_class", ctypes.c_void_p),
        ("min_chars", ctypes.c_int32),
        ("tokens", ctypes.c_int32),
        ("token_offsets", ctypes.c_void_p),
        ("token_bytes", ctypes.c_void_p),
        ("token_heads", ctypes.c_void_p),
        ("token_slots", ctypes.c_void_p),
        ("token_mask", ctypes.c_int32),
        ("unigram_column", ctypes.c_void_p),
        ("grams", ctypes.c_int32),
        ("gram_ids", ctypes.c_void_p),
        ("gram_column", ctypes.c_void_p),
        ("gram_slots", ctypes.c_void_p),
        ("gram_mask", ctypes.c_int32),
        ("min_n", ctypes.c_int32),
        ("max_n", ctypes.c_int32),
        ("mode", ctypes.c_int32),
        ("weights", ctypes.c_void_p),
        ("scale", ctypes.c_void_p),
        ("columns", ctypes.c_int32),
        ("norm", ctypes.c_int32),
        ("coefficients", ctypes.c_void_p),
        ("classes", ctypes.c_int32),
    ]


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """The compiled scorer, or None where `pip install` could not compile it."""
    library = load_native("sqlml._tfidf", "sqlml_tfidf_abi", ABI)
    if library is None:
        return None
    library.sqlml_tfidf_build.restype = None
    library.sqlml_tfidf_build.argtypes = [ctypes.POINTER(_Model)]
    library.sqlml_tfidf_scores.restype = ctypes.c_int64
    library.sqlml_tfidf_scores.argtypes = [
        ctypes.POINTER(_Model),
        ctypes.c_void_p,  # Arrow offsets, at the array's first row
        ctypes.c_int32,  # bytes per offset: 4 (string) or 8 (large_string)
        ctypes.c_void_p,  # Arrow data
        ctypes.c_int64,  # rows
        ctypes.c_void_p,  # scores [rows, classes]
        ctypes.c_void_p,  # fallback [rows], uint8
    ]
    return library


@dataclass
class _TextGraph:
    """The recognised chain, node by node (None where a step is absent)."""

    text: str  # the graph's one input
    normalizer: onnx.NodeProto | None
    tokenizer: onnx.NodeProto
    vectorizer: onnx.NodeProto
    scale: np.ndarray | None  # the Mul after the vectorizer
    norm: str
    linear: onnx.NodeProto
    after: list[onnx.NodeProto] = field(default_factory=list)  # steps after `linear`


class TextScorer:
    """One text model on the C scorer; `predict` answers like the onnxruntime session."""

    def __init__(
        self,
        graph: _TextGraph,
        tables: dict[str, np.ndarray | int],
        library: ctypes.CDLL,
        whole: ort.InferenceSession,
        tail: ort.InferenceSession,
    ):
        self.graph = graph
        self._tables = tables  # keeps the arrays the C struct points into alive
        self._library = library
        self._whole = whole
        self._tail = tail
        self._classes = int(tables["classes"])
        self._struct = _Model(
            **{
                name: (value.ctypes.data if isinstance(value, np.ndarray) else value)
                for name, value in tables.items()
            }
        )
        self._pointer = ctypes.pointer(self._struct)
        library.sqlml_tfidf_build(self._pointer)
        self._outputs = [o.name for o in whole.get_outputs()]
        self._scores_name = tail.get_inputs()[0].name

    def predict(self, inputs: dict[str, np.ndarray | pa.Array]) -> dict[str, np.ndarray]:
        """Score an Arrow string array (DuckDB's batches, no copy) or a numpy array of str."""
        given = inputs[self.graph.text]
        array = _string_array(given)
        if array is None:  # not strings: onnxruntime says what is wrong with it
            return self._run_whole(np.asarray(given, dtype=object))
        n = len(array)
        scores = np.empty((n, self._classes), dtype=np.float32)
        fallback = np.empty(n, dtype=np.uint8)
        width = 8 if pa.types.is_large_string(array.type) else 4
        _, offsets, data = array.buffers()
        start = offsets.address + array.offset * width
        flagged = self._library.sqlml_tfidf_scores(
            self._pointer,
            start,
            width,
            data.address if data is not None else 0,
            n,
            scores.ctypes.data,
            fallback.ctypes.data,
        )
        if flagged < 0:
            raise MemoryError("sqlml's text scorer could not allocate its row buffers")
        tail = self._tail.run(self._outputs, {self._scores_name: scores})
        results = dict(zip(self._outputs, tail))
        if flagged:
            rows = np.flatnonzero(fallback)
            texts = array.take(pa.array(rows)).to_numpy(zero_copy_only=False)
            for name, values in self._run_whole(texts).items():
                results[name][rows] = values
        return results

    def _run_whole(self, texts: np.ndarray) -> dict[str, np.ndarray]:
        shape = self._whole.get_inputs()[0].shape
        feed = texts.reshape(-1, 1) if len(shape) == 2 else texts.reshape(-1)
        return dict(zip(self._outputs, self._whole.run(self._outputs, {self.graph.text: feed})))


def _string_array(given: np.ndarray | pa.Array) -> pa.Array | None:
    if isinstance(given, pa.ChunkedArray):
        given = given.combine_chunks()
    if isinstance(given, pa.Array):
        if pa.types.is_string_view(given.type):
            given = given.cast(pa.string())
        if pa.types.is_string(given.type) or pa.types.is_large_string(given.type):
            return given if not given.null_count else None
        return None
    values = np.asarray(given, dtype=object).reshape(-1)
    try:
        array = pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return array if not array.null_count else None


def text_scorer(proto: onnx.ModelProto, session: ort.InferenceSession) -> TextScorer | None:
    """A TextScorer for this graph when it is a TF-IDF linear model the C scorer reproduces,
    checked against onnxruntime on probe texts; else None."""
    library = native_library()
    if library is None:
        return None
    graph = _recognise(proto)
    if graph is None:
        return None
    tables = _tables(graph)
    if tables is None:
        return None
    try:
        tail = single_thread_session(_tail(proto, graph))
    except CannotSplit:
        return None
    scorer = TextScorer(graph, tables, library, session, tail)
    return scorer if _agrees(scorer, tables) else None


def _recognise(proto: onnx.ModelProto) -> _TextGraph | None:
    graph = proto.graph
    initializers = {i.name: i for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.STRING:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) not in (1, 2) or (len(dims) == 2 and dims[1].dim_value != 1):
        return None
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chain, value = [], inputs[0].name
    while True:
        after = consumers.get(value, [])
        if len(after) != 1:
            break
        node = after[0]
        if node.input[0] != value:
            return None
        chain.append(node)
        if node.op_type in LINEAR_OPS:
            break
        if len(node.output) != 1:
            return None
        value = node.output[0]
    if not chain or chain[-1].op_type not in LINEAR_OPS:
        return None
    # the steps after the linear node (a multiclass model's Normalizer ...) go into the tail,
    # so they may read only what the linear node and they produce
    after = [node for node in graph.node if all(node is not c for c in chain)]
    earlier = {inputs[0].name} | {name for node in chain[:-1] for name in node.output}
    if any(name in earlier for node in after for name in node.input):
        return None
    found = _read_chain(inputs[0].name, chain, initializers)
    if found is not None:
        found.after = after
    return found


def _read_chain(
    text: str, chain: list[onnx.NodeProto], initializers: dict[str, onnx.TensorProto]
) -> _TextGraph | None:
    """The steps in skl2onnx's order, each at most once; None for anything else."""
    order = ["StringNormalizer", "Tokenizer", "TfIdfVectorizer", "Mul", "Normalizer", "Linear"]
    found: dict[str, onnx.NodeProto] = {}
    position = 0
    for node in chain:
        kind = "Linear" if node.op_type in LINEAR_OPS else node.op_type
        if kind in PASS_THROUGH and "TfIdfVectorizer" not in found:
            continue
        if kind not in order[position:]:
            return None
        position = order.index(kind) + 1
        found[kind] = node
    if "Tokenizer" not in found or "TfIdfVectorizer" not in found or "Linear" not in found:
        return None
    scale = None
    if "Mul" in found:
        other = [name for name in found["Mul"].input if name in initializers]
        if len(other) != 1:
            return None
        scale = onnx.numpy_helper.to_array(initializers[other[0]]).astype(np.float32)
    norm = "NONE"
    if "Normalizer" in found:
        norm = _attributes(found["Normalizer"]).get("norm", b"MAX").decode()
    return _TextGraph(
        text,
        found.get("StringNormalizer"),
        found["Tokenizer"],
        found["TfIdfVectorizer"],
        scale,
        norm,
        found["Linear"],
    )


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _tables(graph: _TextGraph) -> dict[str, np.ndarray | int] | None:
    """The C struct's fields from the nodes' attributes; None where a setting is unsupported."""
    case_map = _case_map(graph.normalizer)
    tokenizer = _attributes(graph.tokenizer)
    token_class = _token_class(tokenizer)
    vectorizer = _attributes(graph.vectorizer)
    if case_map is None or token_class is None or graph.norm not in NORMS:
        return None
    if vectorizer.get("max_skip_count", 0) != 0 or "pool_int64s" in vectorizer:
        return None
    mode = MODES.get(vectorizer.get("mode", b"").decode())
    min_n, max_n = vectorizer.get("min_gram_length", 1), vectorizer.get("max_gram_length", 1)
    pool = [s.decode() for s in vectorizer.get("pool_strings", [])]
    counts = list(vectorizer.get("ngram_counts", [])) + [len(pool)]
    indexes = list(vectorizer.get("ngram_indexes", []))
    if mode is None or not 1 <= min_n <= max_n <= min(MAX_GRAM, len(counts) - 1):
        return None
    grams: list[list[str]] = []  # in pool order: the 1-grams, then the 2-grams ...
    for n in range(1, len(counts)):
        block = pool[counts[n - 1] : counts[n]]
        if len(block) % n:
            return None
        grams += [block[k * n : (k + 1) * n] for k in range(len(block) // n)]
    if len(grams) != len(indexes):
        return None
    columns = max(indexes, default=-1) + 1
    pad = tokenizer.get("pad_value", b"#").decode()
    tokens = sorted({t for words in grams for t in words})
    if pad in tokens or any(not t.isascii() for t in tokens):
        return None
    ids = {t: i for i, t in enumerate(tokens)}
    unigram_column = np.full(len(tokens), EMPTY, dtype=np.int32)
    gram_ids, gram_column = [], []
    for words, column in zip(grams, indexes):
        if not min_n <= len(words) <= max_n:
            continue
        if len(words) == 1:
            unigram_column[ids[words[0]]] = column
        else:
            gram_ids.append([ids[w] for w in words] + [EMPTY] * (MAX_GRAM - len(words)))
            gram_column.append(column)
    encoded = [t.encode() for t in tokens]
    token_offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    token_offsets[1:] = np.cumsum([len(t) for t in encoded])
    weights = np.asarray(vectorizer.get("weights", [1.0] * columns), dtype=np.float32)
    scale = graph.scale
    if scale is not None:
        scale = np.broadcast_to(scale.reshape(-1), (columns,)).astype(np.float32)
    coefficients = _coefficients(graph.linear, columns)
    if coefficients is None or len(weights) < columns:
        return None
    return {
        "case_map": case_map,
        "token_class": token_class,
        "min_chars": int(tokenizer.get("mincharnum", 1)),
        "tokens": len(tokens),
        "token_offsets": token_offsets,
        "token_bytes": np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8).copy(),
        "token_heads": np.zeros(len(tokens), dtype=np.uint64),
        "token_slots": np.full(_slots(len(tokens)), EMPTY, dtype=np.int32),
        "token_mask": _slots(len(tokens)) - 1,
        "unigram_column": unigram_column,
        "grams": len(gram_ids),
        "gram_ids": np.array(gram_ids or [[EMPTY] * MAX_GRAM], dtype=np.int32),
        "gram_column": np.array(gram_column or [0], dtype=np.int32),
        "gram_slots": np.full(_slots(len(gram_ids)), EMPTY, dtype=np.int32),
        "gram_mask": _slots(len(gram_ids)) - 1,
        "min_n": min_n,
        "max_n": max_n,
        "mode": mode,
        "weights": weights,
        "scale": scale if scale is not None else 0,
        "columns": columns,
        "norm": NORMS[graph.norm],
        "coefficients": coefficients,
        "classes": coefficients.shape[1],
    }


def _slots(entries: int) -> int:
    """A power of two at least twice the entries: open addressing stays short."""
    return 1 << max(4, (2 * entries).bit_length())


def _case_map(normalizer: onnx.NodeProto | None) -> np.ndarray | None:
    table = np.arange(256, dtype=np.uint8)
    if normalizer is None:
        return table
    attributes = _attributes(normalizer)
    if attributes.get("stopwords"):
        return None
    action = attributes.get("case_change_action", b"NONE").decode()
    letters = np.arange(ord("A"), ord("Z") + 1)
    if action == "LOWER":
        table[letters] += 32
    elif action == "UPPER":
        table[letters + 32] -= 32
    elif action != "NONE":
        return None
    return table


def _token_class(tokenizer: dict) -> np.ndarray | None:
    """The bytes a token is made of, from a token expression `[...]+` (ASCII members and
    ranges); None for separators, marks or any other expression."""
    if tokenizer.get("mark", 0) or tokenizer.get("separators"):
        return None
    expression = tokenizer.get("tokenexp", b"")
    expression = expression.decode() if isinstance(expression, bytes) else expression
    match = _CLASS.fullmatch(expression)
    if match is None:
        return None
    body = match.group(1)
    if body.startswith("^"):
        return None
    members = np.zeros(256, dtype=np.uint8)
    characters = re.findall(r"\\.|.", body)
    k = 0
    while k < len(characters):
        first = characters[k]
        if first.startswith("\\"):
            if first[1].isalnum():
                return None  # \w, \d ...: classes whose meaning depends on the engine
            first = first[1]
        if k + 2 < len(characters) and characters[k + 1] == "-":
            last = characters[k + 2].lstrip("\\")
            if not (first.isascii() and last.isascii()) or ord(last) < ord(first):
                return None
            members[ord(first) : ord(last) + 1] = 1
            k += 3
        else:
            if not first.isascii():
                return None
            members[ord(first)] = 1
            k += 1
    return members


def _coefficients(linear: onnx.NodeProto, columns: int) -> np.ndarray | None:
    """[columns, classes] float32, transposed from the node's [classes, columns]."""
    values = np.asarray(_attributes(linear).get("coefficients", []), dtype=np.float32)
    rows = _coefficients_rows(linear)
    if values.size != rows * columns:
        return None
    return np.ascontiguousarray(values.reshape(rows, columns).T)


def _tail(proto: onnx.ModelProto, graph: _TextGraph) -> onnx.ModelProto:
    """The linear node with identity coefficients on the raw scores, then the graph's steps
    after it: onnxruntime's own intercepts, post-transform, labels and normalization."""
    linear = graph.linear
    classes = _coefficients_rows(linear)
    identity = np.eye(classes, dtype=np.float32).reshape(-1).tolist()
    kept = {k: v for k, v in _attributes(linear).items() if k != "coefficients"}
    node = onnx.helper.make_node(
        linear.op_type,
        ["sqlml_text_scores"],
        list(linear.output),
        domain=ML_DOMAIN,
        coefficients=identity,
        **kept,
    )
    used = {name for step in graph.after for name in step.input}
    tail = onnx.helper.make_graph(
        [node, *graph.after],
        "sqlml_text_tail",
        [
            onnx.helper.make_tensor_value_info(
                "sqlml_text_scores", onnx.TensorProto.FLOAT, [None, classes]
            )
        ],
        list(proto.graph.output),
        [i for i in proto.graph.initializer if i.name in used],
    )
    return model_like(proto, tail)


def _coefficients_rows(linear: onnx.NodeProto) -> int:
    attributes = _attributes(linear)
    if linear.op_type == "LinearClassifier":
        return len(attributes.get("intercepts", [])) or 1
    return int(attributes.get("targets", 1))


EDGE_PROBES = ["", " ", "!!!", "a", "a b c", "x_y 12 3", "\t\n", "#", "# #", "a\x00b", "caf\u00e9"]


def _probe_texts(tables: dict) -> list[str]:
    """Texts that hit every n-gram, in several cases and separators, plus edge cases and
    random printable ASCII (fixed seed)."""
    offsets, data = tables["token_offsets"], tables["token_bytes"].tobytes()
    tokens = [data[offsets[i] : offsets[i + 1]].decode() for i in range(int(tables["tokens"]))]
    rng = np.random.default_rng(0)
    runs = [" ".join(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]
    for separator in (" ", ", ", "-", "  ", ".", "_"):
        picks = rng.choice(len(tokens), size=(64, 6)) if tokens else np.zeros((0, 6), int)
        runs += [separator.join(tokens[i] for i in row) for row in picks]
    cased = [t.upper() for t in runs[:32]] + [t.title() for t in runs[32:64]]
    repeated = [" ".join([t] * 3) for t in tokens[:50]]
    printable = np.array(list("abcdefghijklmnopqrstuvwxyzABC0123456789_ .,-!?'\t"))
    noise = ["".join(rng.choice(printable, size=40)) for _ in range(64)]
    mixed = [t + " caf\u00e9" for t in runs[:8]]  # non-ASCII rows: onnxruntime's part
    return EDGE_PROBES + runs + cased + repeated + noise + mixed


def _agrees(scorer: TextScorer, tables: dict) -> bool:
    """Whether the C scorer answers the probe texts as onnxruntime's whole graph does."""
    texts = np.array(_probe_texts(tables), dtype=object)
    try:
        want = scorer._run_whole(texts)
        got = scorer.predict({scorer.graph.text: pa.array(texts, type=pa.string())})
    except Exception:  # onnxruntime refusing the probe: leave the model to it
        return False
    return same_outputs([got[name] for name in want], list(want.values()), same_dtype=True)
