"""A Griffe extension that lets mkdocstrings read trionano's docstrings as they are written.

trionano's docstrings are plain prose with Sphinx's habits; this rewrites them for Markdown
once the package is loaded, and nothing in the package changes:

- ``from ._x import Y as Y`` (the curated public API of ``trionano`` and ``trionano.wire``,
  which have no ``__all__``) marks ``Y`` public, as Griffe's ``public-redundant-alias``
  extension does;
- a ``#:`` comment above a module or class attribute becomes its docstring (Sphinx's
  convention, used for the constants);
- ``__slots__``, ``__repr__`` and such are left out;
- an attrs class gets the ``__init__`` attrs writes (Griffe knows dataclasses only), and an
  attribute's value is shown only for module constants, never as an ``attrs.field(...)`` call
  or an ``__init__`` statement;
- a role (:literal:`:class:\\`~trionano.Server\\``, ``:meth:``, ``:func:``...) becomes a link to
  the object's page when the reference renders it, else a code span;
- a paragraph ending in ``::`` ends in ``:``, and a ``::`` alone goes (the indented block after
  it is a Markdown code block).
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

ATTRS_DECORATORS = frozenset(
    {"attrs.frozen", "attrs.define", "attrs.mutable", "attr.s", "attr.attrs", "attr.frozen", "attr.define"}
)
ATTRS_FIELDS = frozenset({"attrs.field", "attr.ib", "attr.field"})
#: Class members that say nothing to a reader of the reference.
HIDDEN = frozenset({"__slots__", "__repr__", "__attrs_post_init__", "__weakref__", "__hash__"})
ROLE = re.compile(r":(?:class|meth|func|attr|data|mod|exc|obj):`(~?)([^`]+)`")


def _public_path(path: str) -> bool:
    return not any(part.startswith("_") for part in path.split("."))


class TrionanoDocs(griffe.Extension):
    """Public redundant aliases, ``#:`` attribute docs, Sphinx roles as cross-references."""

    def __init__(self) -> None:
        super().__init__()
        self._redundant: dict[str, set[str]] = {}  # module path -> names imported "as" themselves

    def on_module_instance(self, *, node: ast.AST | griffe.ObjectNode, mod: griffe.Module, **kwargs: Any) -> None:
        if not isinstance(node, ast.Module):
            return
        names = {
            alias.name
            for statement in node.body
            if isinstance(statement, ast.ImportFrom)
            for alias in statement.names
            if alias.asname == alias.name
        }
        self._redundant[mod.path] = names

    def on_module_members(self, *, node: ast.AST | griffe.ObjectNode, mod: griffe.Module, **kwargs: Any) -> None:
        for name in self._redundant.get(mod.path, ()):
            member = mod.members.get(name)
            if member is not None and not mod.exports:
                member.public = True

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != "trionano":
            return
        public = self._public_names(pkg)
        for obj in self._walk(pkg):
            if obj.is_class:
                for name in HIDDEN & obj.members.keys():
                    obj.del_member(name)
        for obj in self._walk(pkg):
            if isinstance(obj, griffe.Class) and self._attrs_options(obj) is not None:
                self._attrs_init(obj)
            if isinstance(obj, griffe.Attribute):
                if obj.docstring is None:
                    self._comment_docstring(obj)
                if obj.parent is not None and obj.parent.is_class:
                    obj.value = None
            if obj.docstring is not None:
                obj.docstring.value = self._rewrite(obj.docstring.value, obj, public)

    def _walk(self, obj: griffe.Object) -> list[griffe.Object]:
        found = [obj]
        for member in obj.members.values():
            if not member.is_alias and isinstance(member, griffe.Object):
                found.extend(self._walk(member))
        return found

    def _public_names(self, pkg: griffe.Module) -> dict[str, str]:
        """canonical path -> the public path the reference renders it under."""
        names: dict[str, str] = {}
        modules = [pkg, *(m for m in pkg.modules.values() if not m.name.startswith("_") and not m.is_alias)]
        for module in modules:
            for name, member in module.members.items():
                if name.startswith("_") or not member.is_public:
                    continue
                try:
                    canonical = member.final_target.path if isinstance(member, griffe.Alias) else member.path
                except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                    continue
                names.setdefault(canonical, f"{module.path}.{name}")
        return names

    @staticmethod
    def _call_arguments(value: object) -> dict[str, Any]:
        if not isinstance(value, griffe.ExprCall):
            return {}
        return {arg.name: arg.value for arg in value.arguments if isinstance(arg, griffe.ExprKeyword)}

    def _attrs_options(self, cls: griffe.Class) -> dict[str, Any] | None:
        """The arguments of an ``@attrs.frozen(...)``-like decorator; None if there is none."""
        for decorator in cls.decorators:
            value = decorator.value
            path = value.canonical_path if isinstance(value, griffe.Expr) else value
            if path in ATTRS_DECORATORS:
                return self._call_arguments(value)
        return None

    def _attrs_init(self, cls: griffe.Class) -> None:
        if "__init__" in cls.members:
            return
        options = self._attrs_options(cls) or {}
        kw_only = str(options.get("kw_only")) == "True"
        parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
        for member in cls.members.values():
            if not isinstance(member, griffe.Attribute) or member.annotation is None:
                continue
            if "instance-attribute" not in member.labels or "ClassVar" in str(member.annotation):
                continue  # a ClassVar, not a field
            default: Any = member.value
            if isinstance(default, griffe.ExprCall) and default.canonical_path in ATTRS_FIELDS:
                arguments = self._call_arguments(default)
                if str(arguments.get("init")) == "False":
                    continue
                default = f"{arguments['factory']}()" if "factory" in arguments else arguments.get("default")
            kind = griffe.ParameterKind.keyword_only if kw_only else griffe.ParameterKind.positional_or_keyword
            parameters.append(
                griffe.Parameter(member.name.lstrip("_"), annotation=member.annotation, kind=kind, default=default)
            )
        init = griffe.Function(
            "__init__", lineno=cls.lineno, parent=cls, parameters=griffe.Parameters(*parameters), returns="None"
        )
        cls.set_member("__init__", init)

    def _comment_docstring(self, attr: griffe.Object) -> None:
        module = attr.module
        lineno = attr.lineno
        if lineno is None:
            return
        lines = module.lines
        comment: list[str] = []
        index = lineno - 2
        while index >= 0 and lines[index].lstrip().startswith("#:"):
            comment.insert(0, lines[index].lstrip()[2:].strip())
            index -= 1
        if comment:
            attr.docstring = griffe.Docstring(" ".join(comment), lineno=lineno, parent=attr)

    def _target(self, name: str, obj: griffe.Object, public: dict[str, str]) -> str | None:
        """The public path of ``name`` as seen from ``obj``, if the reference renders it."""
        name = name.removesuffix("()")
        head, _, rest = name.partition(".")
        path: str | None = None
        if head == "trionano":
            path = name
        else:
            scope: griffe.Object | None = obj if obj.is_class or obj.is_module else obj.parent
            while scope is not None and path is None:
                try:
                    path = scope.resolve(head) + (f".{rest}" if rest else "")
                except griffe.NameResolutionError:
                    scope = scope.parent
        if path is None or not path.startswith("trionano"):
            return None
        # the longest canonical prefix that has a public name, then the rest of the path
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in public:
                path = ".".join([public[prefix], *parts[cut:]])
                break
        if not _public_path(path):
            return None
        try:
            found = obj.modules_collection.get_member(path)
        except (KeyError, ValueError, griffe.AliasResolutionError):
            return None
        return path if found is not None else None

    def _rewrite(self, text: str, obj: griffe.Object, public: dict[str, str]) -> str:
        def role(match: re.Match[str]) -> str:
            short, name = match.group(1), match.group(2)
            shown = name.rsplit(".", 1)[-1] if short else name
            target = self._target(name, obj, public)
            return f"[`{shown}`][{target}]" if target else f"`{shown}`"

        text = ROLE.sub(role, text)
        text = re.sub(r"(?m)^[ \t]*::[ \t]*\n", "", text)  # a paragraph that is only "::"
        return re.sub(r"(?m)(\S)::$", r"\1:", text)
