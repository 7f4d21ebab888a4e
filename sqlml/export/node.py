"""One ONNX node as the translators read it: attributes decoded, constant inputs known.

TensorFlow-free on purpose: the export's op handlers and the native tree scorer
(`sqlml.runtimes.trees`) both read tree ensembles through it, and scoring must not import
TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from sqlml.export import ExportError


@dataclass
class Node:
    """Build-time view of one ONNX node: attributes, opset, inputs known as constants."""

    proto: onnx.NodeProto
    model: str
    opset: int
    constants: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.attrs = {}
        for attribute in self.proto.attribute:
            if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise self.fail(f"attribute {attribute.name!r} holds a subgraph")
            value = onnx.helper.get_attribute_value(attribute)
            if isinstance(value, onnx.TensorProto):
                value = numpy_helper.to_array(value)
            self.attrs[attribute.name] = value

    @property
    def op_type(self) -> str:
        return self.proto.op_type

    @property
    def domain(self) -> str:
        return self.proto.domain or "ai.onnx"

    @property
    def name(self) -> str:
        return self.proto.name or (self.proto.output[0] if self.proto.output else "?")

    def fail(self, message: str) -> ExportError:
        return ExportError(
            f"model {self.model}: cannot export ONNX op {self.domain}.{self.op_type} "
            f"(node {self.name!r}): {message}"
        )

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def strings(self, name: str) -> list[str]:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in self.attrs.get(name, [])]

    def choice(self, name: str, default: str, supported: Sequence[str]) -> str:
        """A string attribute whose value must be one this translator implements."""
        value = self.attr(name, default)
        if value not in supported:
            raise self.fail(
                f"{name}={value!r} is not supported (supported: {', '.join(supported)})"
            )
        return value

    def constant(self, index: int) -> np.ndarray | None:
        """The value of input `index` when it is known before running (initializer/Constant)."""
        if index >= len(self.proto.input) or not self.proto.input[index]:
            return None
        return self.constants.get(self.proto.input[index])

    def has_input(self, index: int) -> bool:
        return index < len(self.proto.input) and bool(self.proto.input[index])

    def required_constant(self, index: int, what: str) -> np.ndarray:
        value = self.constant(index)
        if value is None:
            raise self.fail(f"its {what} must be a constant, not computed by the graph")
        return value
