"""Typed errors carry what a user needs: positions, the compiler's text, the limit and its value."""

import gpuport as gp
from gpuport.errors import CompileMessage

NAGA = """Shader 'k' parsing error: no definition in scope for identifier: `q`
  ┌─ wgsl:2:10
  │
2 │  let y = q; }
  │          ^ unknown identifier
"""


def test_compile_error_finds_line_and_column_in_naga_text():
    err = gp.ShaderCompileError("k", NAGA, source="fn main() {\n let y = q; }")
    assert (err.line, err.column) == (2, 10)
    assert "line 2:10" in str(err) and "unknown identifier" in str(err)
    assert "2 |  let y = q; }" in str(err)


def test_compile_error_takes_structured_messages_from_tint():
    msgs = [CompileMessage(7, 3, "unresolved value 'q'")]
    err = gp.ShaderCompileError("k", "k:7:3: unresolved value 'q'", msgs)
    assert (err.line, err.column) == (7, 3) and err.messages == msgs


def test_limit_exceeded_is_also_a_value_error():
    err = gp.LimitExceeded("maxBufferSize", 268435456, 300000000, "a tensor")
    assert isinstance(err, ValueError) and isinstance(err, gp.GpuportError)
    assert "maxBufferSize is 268,435,456" in str(err) and "300,000,000" in str(err)
