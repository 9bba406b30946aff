"""A small C/C++ tokenizer for the package's CUDA sources: what a kernel's identity is computed from.

It does what a compiler's first translation phases do and no more: backslash-newlines are spliced, comments become
one space, and the text is split into tokens (identifiers, numbers, string and character literals, punctuators).
A preprocessor directive (a line starting with ``#``) is kept as one unit with its own tokens. Whitespace is not
a token, so two texts that differ only in comments, blank lines or spacing give the same tokens; a change to any
token gives different ones. Nothing is expanded or evaluated here (``csource.py`` works on these tokens).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"""
    (?P<ident>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<number>\.?[0-9](?:[eEpP][+-]|[A-Za-z_0-9.'])*)
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<char>'(?:\\.|[^'\\\n])*')
  | (?P<punct>>>=|<<=|->\*|\.\.\.|::|->|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^!=<>]=|\#\#|[^\sA-Za-z_0-9])
  | (?P<space>\s+)
""", re.VERBOSE)
#: A comment, or a literal that may hold comment-like text (kept as it is).
_COMMENT = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.DOTALL)


@dataclass(frozen=True)
class Directive:
    """A preprocessor line: its name (``define``, ``include``, ``if``, ...; empty for a lone ``#``) and the tokens
    after the name."""

    name: str
    tokens: tuple[str, ...]
    #: A ``#define NAME(...)`` whose parenthesis follows the name directly: a function-like macro (with a space
    #: between them it is an object-like macro whose body starts with a parenthesis).
    function_like: bool = False

    @property
    def text(self) -> str:
        if self.function_like:
            return " ".join((f"#{self.name}", self.tokens[0] + self.tokens[1], *self.tokens[2:]))
        return " ".join(("#" + self.name, *self.tokens)).strip()


def _without_comments(text: str) -> str:
    spliced = text.replace("\\\r\n", "").replace("\\\n", "")
    return _COMMENT.sub(lambda m: m.group(0) if m.group(0)[0] in "\"'" else " ", spliced)


def split(text: str) -> list[str]:
    """The tokens of one line or fragment of code (comments already removed); a character no token starts with is
    a token of its own."""
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        if match.lastgroup != "space":
            out.append(match.group(0))
    return out


def tokenize(text: str) -> list[str | Directive]:
    """The tokens of a source file in order, each directive as one :class:`Directive`."""
    out: list[str | Directive] = []
    for line in _without_comments(text).split("\n"):
        stripped = line.strip()
        if stripped.startswith("#"):
            words = split(stripped[1:])
            name = words[0] if words and re.fullmatch(r"[A-Za-z_]\w*", words[0]) else ""
            function_like = name == "define" and re.match(r"#\s*define\s+\w+\(", stripped) is not None
            out.append(Directive(name, tuple(words[1:] if name else words), function_like))
        else:
            out.extend(split(line))
    return out


def is_identifier(token: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", token))


def identifiers(token: str) -> list[str]:
    """The identifiers in a token: itself, or those of a directive kept as one token inside a definition."""
    if token.startswith("#"):
        return [t for t in split(token[1:]) if is_identifier(t)]
    return [token] if is_identifier(token) else []
